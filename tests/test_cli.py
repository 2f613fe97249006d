"""The command line as a newcomer meets it: help, typos, reuse, mismatches, names."""

import os

import numpy as np
import pytest

from certvae_jax import train
from configs import digits
from tests.conftest import tiny_config
from tests.launcher import ROOT, launch

SMOKE = ["--config.train.progress=False"]


def run(script, *args, cwd=ROOT, subprocess_=False):
  return launch(script, *args, code=None, cwd=cwd, subprocess_=subprocess_)


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpfull"])
def test_help_prints_modes_flags_and_config_doc_and_exits_0(flag):
  r = run("train.py", flag, subprocess_=flag == "--help")
  assert r.returncode == 0, r.stderr[-2000:]
  for text in ("Modes: warmup", "--mode", "--workdir", "certvae_jax/configs/digits.py"):
    assert text in r.stdout, text
  if flag == "--helpfull":
    assert "--flagfile" in r.stdout  # absl's own flags are listed too


def test_protocol_help_exits_0():
  r = run("protocol.py", "--help")
  assert r.returncode == 0 and "--[no]fresh" in r.stdout and "--seeds" in r.stdout


@pytest.mark.parametrize("args", [["--config.train.stepz=10"],
                                  ["--config=configs/digits.py", "--config.train.stepz=10"]])
def test_mistyped_override_gives_one_line_with_a_suggestion(tmp_path, args):
  r = run("train.py", f"--workdir={tmp_path}", *args)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert errors == ["error: --config.train.stepz: no config field train.stepz; "
                    "did you mean train.steps?"]


def test_a_mismatched_workdir_names_the_differing_fields(tmp_path):
  wd = str(tmp_path)
  train.Runner(tiny_config(), wd).ensure_teacher()  # warm-up and teacher
  other = tiny_config()
  other.model.latent_dim = 8
  with pytest.raises(ValueError, match=r"different fingerprint \(model.latent_dim: 16 -> 8\)"):
    train.Runner(other, wd).run_warmup()
  assert not os.path.exists(os.path.join(wd, "warmup", "checkpoints_damaged"))  # nothing moved
  other = tiny_config()
  other.teacher.min_mass = 0.3
  with pytest.raises(ValueError, match=r"teacher.min_mass: 0.02 -> 0.3\)"):
    train.Runner(other, wd).ensure_teacher()


def test_default_workdir_follows_the_data_and_the_log_counts_right(tmp_path):
  x = np.random.default_rng(0).random((60, 16)).astype(np.float32)
  np.savez(tmp_path / "faces.npz", x=x)
  r = run("train.py", "--mode=full", "--config=digits:smoke", *SMOKE,
          f"--config.data.source=npz:{tmp_path / 'faces.npz'}", "--config.warmup.steps=10",
          "--config.train.steps=10", "--config.train.batch_size=16", "--config.eval.every=10",
          "--config.train.log_every=10", "--config.train.checkpoint_every=10",
          "--config.teacher.components=(3,)", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  assert os.path.isfile(tmp_path / "runs" / "digits_smoke-faces" / "seed0" / "full" /
                        "summary.json")
  assert "fitting 1 GMM candidate on 48x16 warm-up means" in r.stderr


def test_get_config_gives_a_shipped_config_by_name_as_the_flag_does():
  from certvae_jax import configs  # pylint: disable=import-outside-toplevel
  smoke = configs.get_config("digits:smoke")
  assert smoke.to_dict() == digits.get_config("smoke").to_dict()
  assert configs.get_config("cifar100").model.encoder == "conv"
  with pytest.raises(ValueError, match="unknown shipped config 'mnist'"):
    configs.get_config("mnist")
  with pytest.raises(ValueError, match="unknown argument 'smokey'"):
    configs.get_config("digits:smokey")


@pytest.mark.parametrize("name", ["cifar100", "cifar10", "tiny_imagenet", "cifar100_simplex",
                                  "cifar10_simplex"])
def test_the_image_configs_cpu_argument_changes_only_the_evaluation_batch_and_subset(name):
  from certvae_jax import configs  # pylint: disable=import-outside-toplevel
  from certvae_jax.configs import schema  # pylint: disable=import-outside-toplevel
  cpu, plain = configs.get_config(f"{name}:cpu"), configs.get_config(name)
  schema.validate(cpu)
  assert (cpu.eval.batch_size, cpu.eval.reconstruction_check_rows) == (32, 2000)
  assert (plain.eval.batch_size, plain.eval.reconstruction_check_rows) == (1024, 10000)
  cpu.eval.batch_size, cpu.eval.reconstruction_check_rows = 1024, 10000
  assert cpu.to_dict() == plain.to_dict()
  with pytest.raises(ValueError, match="unknown argument 'gpu'; expected nothing, 'smoke' or "
                                       "'cpu'"):
    configs.get_config(f"{name}:gpu")
  with pytest.raises(ValueError, match="unknown argument 'cpu'; expected nothing or 'smoke'"):
    configs.get_config("digits:cpu")
