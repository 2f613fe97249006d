"""The launch commands the README shows, run as a user runs them: ``launch/*.py`` with
arguments, at smoke size, checking the exit code and the files each says it wrote. The
first command of each script runs in a subprocess, the rest in this process
(:mod:`tests.launcher`).

The image configs (``cifar100``, ``tiny_imagenet``) run the whole protocol, the
baselines table and the report on the conv model: CIFAR-100 on
``tfds.testing.mock_data``, Tiny-ImageNet on a synthetic npz.
"""

import json
import os
import re

import numpy as np
import pytest

from tests.launcher import Result, launch

TINY = ["--config.train.progress=False", "--config.warmup.steps=10", "--config.train.steps=10",
        "--config.train.prefit_steps=10", "--config.train.checkpoint_every=10",
        "--config.eval.every=10", "--config.train.log_every=10",
        "--config.eval.bootstrap_resamples=100", "--config.eval.posthoc_max_iter=50",
        "--config.guard.every=5"]
DIGITS = ["--config=configs/digits.py:smoke", *TINY]


def written_summary(r: Result) -> str:
  """The summary path ``launch/train.py`` says it wrote, checked to exist."""
  found = re.search(r"summary: (\S+summary\.json)", r.stdout)
  assert found, r.stdout
  assert os.path.isfile(found.group(1)), found.group(1)
  assert re.search(r"^train: (certified|not certified)", r.stdout, re.M), r.stdout
  return found.group(1)


def written_tables(r: Result) -> list[str]:
  """The tables ``launch/protocol.py`` says it wrote, checked to exist."""
  found = re.search(r"^tables: (\S+\.json) and (\S+\.md)$", r.stdout, re.M)
  assert found, r.stdout
  for path in found.groups():
    assert os.path.isfile(path), path
  return list(found.groups())


def check_report(rundir: str, *args: str) -> None:
  r = launch("report.py", rundir, *args)
  printed = r.stdout.split()
  out = os.path.join(rundir, "report")
  for name in ("report.md", "report.html"):
    assert os.path.join(out, name) in printed, r.stdout
  assert all(os.path.isfile(p) for p in printed), printed


def test_train_py_modes_targets_and_guards_as_the_readme_shows_them(tmp_path):
  wd = str(tmp_path / "seed0")
  commands = [
      (["--mode=full"], "full"),
      (["--mode=noalign"], "noalign"),
      (["--mode=rescue"], "rescue"),
      (["--mode=full", "--target=fixed"], "full_fixed"),
      (["--mode=full", "--config.guard.policy=raise"], "full_guard_raise"),
      (["--mode=full", "--config.guard.policy=rollback"], "full_guard_rollback"),
      (["--mode=full", "--config.guard.policy=barrier", "--config.guard.kappa=1"],
       "full_guard_barrier"),
      (["--mode=rescue", "--config.guard.student_first_steps=5"], "rescue_sf5"),
      (["--mode=rescue", "--config.train.used_head=shared_safe"], "rescue_shared_safe"),
  ]
  for i, (args, phase) in enumerate(commands):
    r = launch("train.py", *DIGITS, *args, f"--workdir={wd}", subprocess_=i == 0)
    assert written_summary(r) == os.path.join(wd, phase, "summary.json")
  assert "rescue diagnostics at the start" in r.stdout
  assert "used head (shared_safe): aligned through it for " in r.stdout


def test_protocol_py_variants_baselines_guard_and_report(tmp_path):
  root = str(tmp_path / "runs")
  common = [*DIGITS, "--seeds=1", f"--workdir={root}"]
  first = launch("protocol.py", *common, "--fresh", subprocess_=True)
  assert written_tables(first) == [os.path.join(root, "protocol.json"),
                                   os.path.join(root, "protocol.md")]
  assert "ran: seed 0 full, seed 0 noalign, seed 0 rescue" in first.stdout
  again = launch("protocol.py", *common)
  assert "reused (finished before): seed 0 full, seed 0 noalign, seed 0 rescue" in again.stdout
  fresh = launch("protocol.py", *common, "--fresh", code=2)
  assert "--fresh:" in fresh.stderr and "already holds runs" in fresh.stderr
  fixed = written_tables(launch("protocol.py", *common, "--target=fixed"))
  assert fixed[0].endswith("protocol_fixed.json")
  guarded = written_tables(launch("protocol.py", *common, "--config.guard.policy=raise"))
  assert guarded[0].endswith("protocol_guard_raise.json")
  # The flag's path; every method's run is tested in test_baselines.py (MLP) and by the
  # cifar100 case below (conv model).
  base = written_tables(launch("protocol.py", *common, "--baselines",
                               "--config.baselines.methods=('vanilla_vae',)"))
  assert base[0].endswith("baselines.json")
  check_report(root)
  check_report(root, "--target=fixed")


def test_protocol_py_paper2_and_kl_stress(tmp_path):
  root = str(tmp_path / "simplex")
  common = ["--config=configs/digits_simplex.py:smoke", *TINY, "--seeds=1",
            f"--workdir={root}"]
  assert written_tables(launch("protocol.py", *common))[0].endswith("protocol.json")
  # Paper 2's unsupervised teacher: a PCA-GMM of the pixels, fitted before training.
  pca_root = str(tmp_path / "simplex_pca")
  pca = launch("protocol.py", "--config=configs/digits_simplex.py:pca_smoke", *TINY,
               "--seeds=1", f"--workdir={pca_root}")
  assert written_tables(pca)[0] == os.path.join(pca_root, "protocol.json")
  assert "ran: seed 0 escape, seed 0 full, seed 0 vae" in pca.stdout
  assert not os.path.exists(os.path.join(pca_root, "seed0", "warmup"))
  stress = written_tables(launch("protocol.py", *common, "--kl_stress=1,4"))
  assert stress[0] == os.path.join(root, "kl_stress", "kl_stress.json")
  check_report(root)


@pytest.mark.parametrize("name", ["cifar100", "tiny_imagenet"])
def test_image_configs_protocol_baselines_and_report_on_the_conv_model(name, tmp_path):
  """Paper 1's main experiment on the shipped image configs: every variant (rescue
  included) on the conv model, every baseline (once, on the cifar100 config's conv model),
  then the report."""
  root = str(tmp_path / name)
  args = [f"--config=configs/{name}.py:smoke", *TINY, "--seeds=1", f"--workdir={root}",
          "--config.baselines.betas=(4.0,)"]
  mock, source = None, "tfds:cifar100"
  if name == "cifar100":
    mock = 64
  else:
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x=rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8),
             y=rng.integers(0, 200, 64),
             x_test=rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8),
             y_test=rng.integers(0, 200, 32))
    source = f"npz:{npz}"
    args.append(f"--config.data.source={source}")
  r = launch("protocol.py", *args, mock_examples=mock)
  tables = written_tables(r)
  stem = "protocol" if name == "cifar100" else "protocol_fixed"
  assert tables[0] == os.path.join(root, f"{stem}.json")
  assert "seed 0 rescue" in r.stdout
  target = "live" if name == "cifar100" else "fixed"
  with open(os.path.join(root, "seed0", "rescue" + stem[len("protocol"):], "summary.json")) as fh:
    rescue = json.load(fh)
  assert rescue["target"] == target and rescue["test"]["k"] == 10
  assert rescue["dataset"] == source
  assert np.isfinite(rescue["test"]["margin"]) and "rescue_diagnostics" in rescue
  with open(os.path.join(root, "seed0", "teacher", "teacher.json")) as fh:
    assert json.load(fh)["num_components"] == 10
  if name == "cifar100":
    written_tables(launch("protocol.py", *args, "--baselines", mock_examples=mock))
  check_report(root, f"--target={target}")


@pytest.mark.parametrize("name,variants", [("cifar10", "full, seed 0 noalign, seed 0 rescue"),
                                           ("cifar10_simplex", "escape, seed 0 full, seed 0 vae")])
def test_cifar10_configs_run_their_protocols_on_mock_data(name, variants, tmp_path):
  """Paper 1's CIFAR-10 sanity check and paper 2's CIFAR-10 setting (the input-PCA teacher,
  the simplex witness, the escape run) on the conv model, on tfds's mock CIFAR-10."""
  root = str(tmp_path / name)
  r = launch("protocol.py", f"--config=configs/{name}.py:smoke", *TINY, "--seeds=1",
             f"--workdir={root}", mock_examples=64)
  assert written_tables(r)[0] == os.path.join(root, "protocol.json")
  assert f"ran: seed 0 {variants}" in r.stdout
  with open(os.path.join(root, "seed0", "teacher", "teacher.json")) as fh:
    assert json.load(fh)["num_components"] == 10

