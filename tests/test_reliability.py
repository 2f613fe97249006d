"""Issue 6: interruption, damaged checkpoints, non-finite values, locks and overwrite."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from certvae_jax import cli, train
from certvae_jax.training import loop as loop_lib, runner
from certvae_jax.training.checkpoint import Checkpointer
from certvae_jax.training.rundir import WorkdirLock
from tests.conftest import copy_seed, tiny_config
from tests.launcher import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, os.path.join(ROOT, "launch", "train.py")]
# Saving every 2 steps: most of a run's time is spent inside checkpoint saves, so
# random kills often land in the middle of one.
KILL_FLAGS = ["--config=" + os.path.join(ROOT, "configs", "digits.py") + ":smoke",
              "--config.train.progress=False", "--config.warmup.steps=40",
              "--config.train.steps=40", "--config.train.checkpoint_every=2",
              "--config.eval.every=20"]


def restore(workdir, phase, step=None):
  runner = train.Runner(tiny_config(), workdir)
  with Checkpointer(os.path.join(workdir, phase, "checkpoints")) as ckpt:
    return runner.restore(ckpt, 10, step)


def assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _wait_for(path, proc, timeout=120.0):
  """Until ``path`` exists (True) or ``proc`` has ended (False)."""
  end = time.monotonic() + timeout
  while not os.path.exists(path) and proc.poll() is None and time.monotonic() < end:
    time.sleep(0.05)
  return proc.poll() is None


def test_kill_9_at_random_points_loses_nothing(tmp_path):
  ref, victim = str(tmp_path / "ref"), str(tmp_path / "victim")
  # The reference and the final resume run in this process; the victims are killed. The
  # reference saves every 20 steps (checkpoints never change the trajectory, and it has
  # no kill to land in a save): 4 s instead of 8.
  launch("train.py", "--mode=full", f"--workdir={ref}", *KILL_FLAGS,
         "--config.train.checkpoint_every=20")
  rng = np.random.default_rng(2026)
  kills = []
  # One kill at a random point of each training phase: the clock starts when the
  # phase's checkpoint folder appears, so no kill is spent on the start-up imports.
  for phase in ("warmup", "full"):
    proc = subprocess.Popen([*CLI, "--mode=full", f"--workdir={victim}", *KILL_FLAGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delay = float(rng.uniform(0.0, 1.5))
    alive = _wait_for(os.path.join(victim, phase, "checkpoints"), proc)
    time.sleep(delay)
    alive = alive and proc.poll() is None
    if alive:
      proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append((phase, round(delay, 2), "killed" if alive else "had finished"))
  print("kill points (s after the phase began):", kills)
  assert kills[0][2] == "killed", kills
  launch("train.py", "--mode=full", f"--workdir={victim}", *KILL_FLAGS)
  a, _ = restore(ref, "full")
  b, _ = restore(victim, "full")
  assert_same_params(a, b)
  sa = json.load(open(os.path.join(ref, "full", "summary.json")))
  sb = json.load(open(os.path.join(victim, "full", "summary.json")))
  assert sa["train"] == sb["train"] and sa["test"] == sb["test"]


def _largest_data_file(step_dir):
  """The biggest array-data file of a step (Orbax keeps them in ``.../d/`` folders)."""
  files = [os.path.join(root, n) for root, _, names in os.walk(os.path.join(step_dir, "state"))
           if os.path.basename(root) == "d" for n in names]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _largest_data_file(step_dir)
  with open(path, "r+b") as fh:
    fh.truncate(os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
  path = _largest_data_file(step_dir)
  with open(path, "r+b") as fh:
    fh.seek(os.path.getsize(path) // 2)
    chunk = fh.read(64)
    fh.seek(os.path.getsize(path) // 2)
    fh.write(bytes(b ^ 0xFF for b in chunk))


def _garble_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w") as fh:
    fh.write("{not json")


def _delete_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


@pytest.fixture(scope="module")
def warm_reference(tmp_path_factory):
  """A warm-up of 40 steps with checkpoints at 20 and 40."""
  wd = str(tmp_path_factory.mktemp("ref"))
  train.Runner(tiny_config(), wd).run_warmup()
  return wd


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _garble_meta, _delete_manifest])
def test_damaged_latest_checkpoint_is_reported_and_previous_step_used(
    tmp_path, warm_reference, damage, caplog):
  import shutil
  wd = str(tmp_path / "w")
  shutil.copytree(warm_reference, wd)
  os.remove(os.path.join(wd, "warmup", "summary.json"))  # make the run resume
  damage(os.path.join(wd, "warmup", "checkpoints", "40"))
  caplog.set_level(logging.INFO, logger="certvae_jax")
  train.Runner(tiny_config(), wd).run_warmup()
  messages = [r.getMessage() for r in caplog.records]
  assert any("step 40" in m and "damaged" in m for m in messages), messages
  assert any("resuming from step 20" in m for m in messages), messages
  assert os.path.isdir(os.path.join(wd, "warmup", "checkpoints_damaged", "40"))
  a, _ = restore(warm_reference, "warmup", 40)
  b, _ = restore(wd, "warmup", 40)
  assert_same_params(a, b)  # redone from step 20: exactly the uninterrupted result


def test_every_checkpoint_damaged_or_exact_step_damaged_is_an_error(tmp_path, warm_reference):
  import shutil
  wd = str(tmp_path / "w")
  shutil.copytree(warm_reference, wd)
  for step in ("20", "40"):
    _flip_bytes(os.path.join(wd, "warmup", "checkpoints", step))
  with pytest.raises(ValueError, match="step 40 .* is damaged"):
    restore(wd, "warmup", 40)
  with pytest.raises(ValueError, match="every checkpoint .* is damaged"):
    restore(wd, "warmup")


def test_skip_nonfinite_counts_skipped_batches_instead_of_stopping(tmp_path):
  cfg = tiny_config(learning_rate=1e30, skip_nonfinite=True)
  s = train.Runner(cfg, str(tmp_path)).run_warmup()
  # Every update of size 1e30 makes the parameters non-finite, so every batch is skipped
  # and the parameters stay at their (finite) initial values.
  assert s["skipped_batches"] == cfg.warmup.steps
  state, _ = restore(str(tmp_path), "warmup")
  init = train.Runner(cfg, str(tmp_path / "x")).fresh_state(10, 0)
  assert_same_params(state, init)


def test_second_run_on_a_workdir_is_refused_and_a_killed_holder_frees_it(tmp_path):
  wd = str(tmp_path / "w")
  with WorkdirLock(wd):
    r = subprocess.run([*CLI, "--mode=warmup", f"--workdir={wd}", *KILL_FLAGS],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "in use by another run" in r.stderr
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; sys.path.insert(0, %r)\n"
      "from certvae_jax.training.rundir import WorkdirLock\n"
      "l = WorkdirLock(%r).__enter__(); print('locked', flush=True); time.sleep(60)")
      % (ROOT, wd)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(ValueError, match=f"in use by another run \\(pid {holder.pid}\\)"):
    WorkdirLock(wd).__enter__()
  holder.kill()
  holder.wait()
  with WorkdirLock(wd):  # the OS released the dead process's lock
    pass


def test_incompatible_workdir_refused_unless_overwrite(tmp_path, caplog):
  wd = str(tmp_path / "w")
  train.Runner(tiny_config(), wd).run_warmup()
  other = tiny_config()
  other.warmup.alpha_kl = 2.0
  with pytest.raises(ValueError, match="different fingerprint .* --overwrite"):
    train.Runner(other, wd).run_warmup()
  caplog.set_level(logging.INFO, logger="certvae_jax")
  s = train.Runner(other, wd, overwrite=True).run_warmup()
  messages = [r.getMessage() for r in caplog.records]
  assert any("--overwrite: clearing" in m for m in messages)
  assert s["weights"]["alpha_kl"] == 2.0


def test_constant_teacher_runs_and_is_reported_uncertifiable(tmp_path):
  # Label smoothing of a one-class data set: T is the same row for every x, I_T = 0.
  rng = np.random.default_rng(0)
  p = tmp_path / "one_class.npz"
  np.savez(p, x=rng.random((200, 16)).astype(np.float32), y=np.zeros(200, np.int64) + 1,
           x_test=rng.random((40, 16)).astype(np.float32), y_test=np.ones(40, np.int64))
  cfg = tiny_config()
  cfg.data.source = f"npz:{p}"
  cfg.teacher.kind = "label_smoothed"
  cfg.train.init = "fresh"
  cfg.train.batch_size = 32
  s = train.Runner(cfg, str(tmp_path / "w")).run_mode("full")
  assert s["train"]["teacher_mi"] == pytest.approx(0.0, abs=1e-6)
  assert s["train"]["certifiable"] is False and s["train"]["certified"] is False


class _FailAt(loop_lib.Hook):
  """A bug in a hook: raises at the first sync at or after ``step``."""

  def __init__(self, step):
    self.step = step

  def on_sync(self, loop, step, rows):
    if step >= self.step:
      raise RuntimeError("a bug")


def test_a_bug_inside_a_phase_names_the_last_good_checkpoint_and_loses_nothing(
    seed_dir, tmp_path, monkeypatch):
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  with pytest.raises(train.PhaseFailed) as failed:
    train.train(tiny_config(), "full", wd, hooks=[_FailAt(30)])
  assert str(failed.value) == ("full failed at step 30 (RuntimeError, traceback above); its "
                               "last good checkpoint is step 20 of full; rerun to resume")
  assert isinstance(failed.value.__cause__, RuntimeError)
  assert train.train(tiny_config(), "full", wd)["step"] == 40  # resumed from step 20

  train.train(tiny_config(), "noalign", wd)

  def broken(*args, **kwargs):
    raise TypeError("broken diagnostics")

  monkeypatch.setattr(runner, "rescue_diagnostics", broken)
  with pytest.raises(train.PhaseFailed, match=r"^rescue failed at step 40 \(TypeError, "
                     r"traceback above\); its last good checkpoint is step 40 of noalign; "
                     "rerun to resume$"):
    train.train(tiny_config(), "rescue", wd)
  monkeypatch.undo()
  assert train.train(tiny_config(), "rescue", wd)["step"] == 80


def test_a_bug_before_any_checkpoint_says_the_phase_starts_again(seed_dir, tmp_path):
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  with pytest.raises(train.PhaseFailed, match=r"^full failed at step 10 \(RuntimeError, "
                     r"traceback above\); it saved no checkpoint \(finished phases before it "
                     r"are kept\); rerun to start it again$"):
    train.train(tiny_config(), "full", wd, hooks=[_FailAt(10)])


def test_the_cli_prints_the_traceback_then_one_line_and_exits_1(capsys):
  def main():
    try:
      raise TypeError("deep inside")
    except TypeError as e:
      raise train.PhaseFailed("rescue failed at step 2 (TypeError, traceback above); ...") from e

  with pytest.raises(SystemExit) as exited:
    cli.run_guarded(main)
  assert exited.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0] == "Traceback (most recent call last):"
  assert "TypeError: deep inside" in err
  assert err[-1] == "error: rescue failed at step 2 (TypeError, traceback above); ..."
