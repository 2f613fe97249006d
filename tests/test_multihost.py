"""Data parallelism over a device mesh (issue 4, test a: 4 forced CPU devices against 1)
and multi-host on one machine (tests b and c: two processes with 2 CPU devices each, gloo
collectives, against one process with 4 devices).

XLA's device count is fixed when JAX starts, so each multi-device configuration runs in
its own process with ``--xla_force_host_platform_device_count``; the one-device run is this
process. One 4-device run serves tests a and b.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from certvae_jax import train
from configs import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The digits smoke config with these fields, as flags and as a config.
OVERRIDES = {"train.progress": False, "warmup.steps": 20, "train.steps": 20,
             "train.checkpoint_every": 10, "eval.every": 20, "eval.bootstrap_resamples": 100,
             "eval.posthoc_max_iter": 50}
FLAGS = ["--config=" + os.path.join(ROOT, "configs", "digits.py") + ":smoke",
         *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]


def smoke_config(batch_size: int = 128):
  c = digits.get_config("smoke")
  for name, value in OVERRIDES.items():
    section, field = name.split(".")
    c[section][field] = value
  c.train.batch_size = batch_size
  return c


# One process, ``--mode=full`` on 4 devices through the library (as launch/train.py runs
# it), reporting how the restored state is placed and saving its final parameters.
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import jax, numpy as np
from certvae_jax import train
from tests.test_multihost import smoke_config
runner = train.Runner(smoke_config({batch}), {workdir!r})
s = runner.run_mode("full")
assert runner.ctx.mesh.size == jax.device_count() == {devices}
with runner.dir.checkpoints("full") as ckpt:
  state, _ = runner.restore(ckpt, k=runner.ctx.num_classes)
np.savez({workdir!r} + "/params.npz", *[np.asarray(x) for x in jax.tree.leaves(state.params)])
print(json.dumps({{"devices": jax.device_count(),
                  "sharded": str(state.params["encoder"]["mu"]["kernel"].sharding)}}))
"""


def in_devices(workdir: str, devices: int, batch: int = 128) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT, workdir=workdir,
                                                             devices=devices, batch=batch)],
                        cwd=ROOT, env=env(devices), capture_output=True, text=True, timeout=400)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def launch(args, devices):
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
                          env=env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def two_processes(args):
  port = free_port()
  procs = [launch([*args, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}"], devices=2) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def one_process(args):
  p = launch(args, devices=4)
  out, err = p.communicate(timeout=400)
  assert p.returncode == 0, err[-3000:]
  return out


def certificate(workdir, phase="full"):
  with open(os.path.join(workdir, phase, "summary.json")) as fh:
    s = json.load(fh)
  return {(split, k): s[split][k] for split in ("train", "test")
          for k in ("teacher_mi", "alignment", "margin", "student_mi", "certified")}


def assert_same_certificate(workdir_a, workdir_b, phase="full"):
  """Equal verdicts, and every other certificate number within 1e-5."""
  a, b = certificate(workdir_a, phase), certificate(workdir_b, phase)
  for key in a:
    if key[1] == "certified":
      assert a[key] == b[key], key
    else:
      assert a[key] == pytest.approx(b[key], abs=1e-5), key


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
  """``(workdir, what it printed)`` of one 4-device ``--mode=full`` run in its own process."""
  workdir = str(tmp_path_factory.mktemp("four") / "run")
  r = in_devices(workdir, 4)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, json.loads(r.stdout.splitlines()[-1])


def test_four_devices_match_one_device(four_device_run, tmp_path):
  four_dir, four = four_device_run
  assert four["devices"] == 4 and "spec=P()" in four["sharded"]  # state replicated
  one_dir = str(tmp_path / "one")
  runner = train.Runner(smoke_config(), one_dir)  # this process: one device
  runner.run_mode("full")
  assert runner.ctx.mesh.size == 1
  with runner.dir.checkpoints("full") as ckpt:
    state, _ = runner.restore(ckpt, k=runner.ctx.num_classes)
  # Same math; only the order of float additions differs (all-reduce over 4 shards).
  assert_same_certificate(four_dir, one_dir)
  p4 = np.load(os.path.join(four_dir, "params.npz"))
  for i, leaf in enumerate(jax.tree.leaves(state.params)):
    np.testing.assert_allclose(p4[f"arr_{i}"], np.asarray(leaf), atol=1e-4, rtol=1e-4)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  r = in_devices(str(tmp_path / "d4"), 4, batch=130)
  assert r.returncode != 0
  assert "config.train.batch_size: 130 must divide by the 4 devices" in r.stderr


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """``(workdir, outputs)`` of one 2-process ``--mode=full`` run (warm-up, teacher, full),
  shared by the tests that read it."""
  multi = str(tmp_path_factory.mktemp("multi") / "run")
  return multi, two_processes(["--mode=full", f"--workdir={multi}", *FLAGS])


def test_two_processes_match_one_process_with_four_devices(two_process_run, four_device_run):
  multi, outs = two_process_run
  single = four_device_run[0]
  # Gloo's C++ logging shares stdout, and its threads' lines can arrive cut into pieces
  # that name neither Gloo nor ranks: look for the launcher's own lines instead.
  ours = [[l for l in out.splitlines() if l.startswith(("train:", "test:", "collapse:"))
           or "summary:" in l] for out, _ in outs]
  assert any(l.startswith("train:") for l in ours[0]) and ours[1] == []  # only process 0 prints
  assert_same_certificate(multi, single)


def test_checkpoint_from_two_processes_restores_in_one_and_continues(two_process_run,
                                                                   tmp_path):
  # The 2-process run's warm-up (20 steps, checkpoints at 10 and 20), copied.
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  shutil.copytree(two_process_run[0], multi, ignore=shutil.ignore_patterns(".lock"))
  # One process, 4 devices, resumes the 2-process warm-up from step 20 to 40 ...
  one_process(["--mode=warmup", f"--workdir={multi}", *FLAGS, "--config.warmup.steps=40"])
  # ... and ends where a 4-device run that never stopped ends.
  one_process(["--mode=warmup", f"--workdir={single}", *FLAGS, "--config.warmup.steps=40"])
  a, b = certificate(multi, "warmup"), certificate(single, "warmup")
  for key in a:
    if key[1] != "certified":
      assert a[key] == pytest.approx(b[key], abs=1e-5), key
  pa = np.load(os.path.join(multi, "warmup", "predictions.npz"))
  pb = np.load(os.path.join(single, "warmup", "predictions.npz"))
  np.testing.assert_allclose(pa["train_mu"], pb["train_mu"], atol=1e-4)
