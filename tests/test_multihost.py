"""Multi-host on one machine (issue 4, tests b and c): two processes with 2 CPU devices
each (gloo collectives) against one process with 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config=" + os.path.join(ROOT, "configs", "digits.py") + ":smoke",
         "--config.train.progress=False", "--config.warmup.steps=20",
         "--config.train.steps=20", "--config.train.checkpoint_every=10",
         "--config.eval.every=20", "--config.eval.bootstrap_resamples=100",
         "--config.eval.posthoc_max_iter=50"]


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


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """``(workdir, outputs)`` of one 2-process ``--mode=full`` run (warm-up, teacher, full),
  shared by the tests that read it."""
  multi = str(tmp_path_factory.mktemp("multi") / "run")
  return multi, two_processes(["--mode=full", f"--workdir={multi}", *FLAGS])


def test_two_processes_match_one_process_with_four_devices(two_process_run, tmp_path):
  multi, outs = two_process_run
  single = str(tmp_path / "single")
  # Gloo's C++ logging shares stdout, and its threads' lines can arrive cut into pieces
  # that name neither Gloo nor ranks: look for the launcher's own lines instead.
  ours = [[l for l in out.splitlines() if l.startswith(("train:", "test:", "collapse:"))
           or "summary:" in l] for out, _ in outs]
  assert any(l.startswith("train:") for l in ours[0]) and ours[1] == []  # only process 0 prints
  one_process(["--mode=full", f"--workdir={single}", *FLAGS])
  a, b = certificate(multi), certificate(single)
  for key in a:
    if key[1] == "certified":
      assert a[key] == b[key]
    else:
      assert a[key] == pytest.approx(b[key], abs=1e-5), key


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
