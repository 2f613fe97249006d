"""Faults a cloud run meets, made to happen deterministically: SIGTERM and SIGINT at a
known step (sent by a hook from inside the run), a second signal during the save, torn
append-only files, damaged run files. Each ends with one line, a documented exit code, an
intact checkpoint and a resume that ends bit-identical to a run never stopped."""

import errno
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import certificate, data, teacher
from certvae_jax.training import writers
from certvae_jax.training.checkpoint import Checkpointer
from tests import tensorboard_events
from tests.launcher import launch

ARGS = ["--config=digits:smoke", "--config.train.progress=False", "--config.warmup.steps=20",
        "--config.train.steps=40", "--config.train.checkpoint_every=10",
        "--config.eval.every=20", "--config.train.log_every=5",
        "--config.eval.bootstrap_resamples=100", "--config.eval.posthoc_max_iter=50"]
SIGNAL_AT = "CERTVAE_TEST_SIGNAL_AT"  # "phase:step:SIGNAME[:times]"


def signal_at(config):
  """A hook (loaded by import path) that signals its own process at the step named in
  ``$CERTVAE_TEST_SIGNAL_AT``, as a scheduler would, once per run."""
  del config
  from certvae_jax.training import loop  # pylint: disable=import-outside-toplevel
  if SIGNAL_AT not in os.environ:  # the rerun
    return loop.Hook()
  phase, step, name, *times = os.environ[SIGNAL_AT].split(":")

  class SignalAt(loop.Hook):
    def wants_sync(self, at, last):
      return at == int(step)

    def on_sync(self, lp, at, rows):
      if lp.name == phase and at == int(step) and lp.resumed_meta is None:
        for _ in range(int(times[0]) if times else 1):
          os.kill(os.getpid(), getattr(signal, name))
  return SignalAt()


def final_digest(workdir, phase="full", step=40):
  with Checkpointer(os.path.join(workdir, phase, "checkpoints")) as ckpt:
    assert ckpt.latest_step() == step
    return ckpt.read_meta(step)["state_digest"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: its workdir and its final state digest."""
  wd = str(tmp_path_factory.mktemp("reference"))
  launch("train.py", "--mode=full", f"--workdir={wd}", *ARGS)
  return wd, final_digest(wd)


def interrupted(reference, workdir, spec, code, *more):
  """Runs ``full`` (from the reference's warm-up and teacher) in a subprocess that
  signals itself per ``spec``, checked to exit ``code``; returns its stderr."""
  shutil.copytree(reference[0], workdir, ignore=shutil.ignore_patterns(".lock", "full"))
  os.environ[SIGNAL_AT] = spec
  try:
    r = launch("train.py", "--mode=full", f"--workdir={workdir}", *ARGS,
               "--config.train.hooks=tests.test_faults:signal_at", *more, code=code,
               subprocess_=True)
  finally:
    del os.environ[SIGNAL_AT]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  return r.stderr


@pytest.mark.parametrize("name,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_the_step_reached_and_the_rerun_ends_bit_identical(
    tmp_path, reference, name, code):
  wd = str(tmp_path / "victim")
  err = interrupted(reference, wd, f"full:23:{name}", code)
  assert (f"full: preempted at step 23 ({name}); saved; rerun the same command to resume"
          in err.splitlines()), err[-2000:]
  with Checkpointer(os.path.join(wd, "full", "checkpoints")) as ckpt:
    assert ckpt.latest_step() == 23  # not the periodic step 20: nothing lost
  assert not os.path.exists(os.path.join(wd, "full", "summary.json"))
  r = launch("train.py", "--mode=full", f"--workdir={wd}", *ARGS,
             "--config.train.hooks=tests.test_faults:signal_at")
  assert "resuming from step 23" in r.stderr
  assert final_digest(wd) == reference[1]


def test_a_second_signal_stops_at_once_and_keeps_the_last_committed_checkpoint(
    tmp_path, reference):
  """With TensorBoard events on (not in the fingerprint): after the resume they show exactly
  what metrics.jsonl holds, the rows the stopped run flushed up to step 20 included."""
  wd = str(tmp_path / "victim")
  board = "--config.log.tensorboard=True"
  err = interrupted(reference, wd, "full:23:SIGTERM:2", 143, board)
  assert "SIGTERM again: stopped at once; the last committed checkpoint is kept" in err
  r = launch("train.py", "--mode=full", f"--workdir={wd}", *ARGS,
             "--config.train.hooks=tests.test_faults:signal_at", board)
  assert "resuming from step 20" in r.stderr
  assert final_digest(wd) == reference[1]
  tensorboard_events.assert_same_as_metrics_jsonl(os.path.join(wd, "full"))


def one_error_line(r):
  """The only ``error:`` line of a command, checked to come without a traceback."""
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, r.stderr[-3000:]
  return errors[0]


def run_full(workdir, *more, code=0):
  return launch("train.py", "--mode=full", f"--workdir={workdir}", *ARGS, *more, code=code)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_never_blocks_the_resume(
    tmp_path, reference):
  wd = copy_run(reference, tmp_path / "w")
  run_full(wd, "--config.train.steps=20")
  path = os.path.join(wd, "full", "metrics.jsonl")
  with open(path, "a") as fh:
    fh.write('{"step": 21, "train_step/loss": 1.2')  # a write cut by a full disk
  r = run_full(wd)
  assert f"{path}: dropped an incomplete last line" in r.stderr
  assert "resuming from step 20" in r.stderr
  assert final_digest(wd) == reference[1]
  rows = writers.read_jsonl(path)
  assert [row["step"] for row in rows] == [
      row["step"] for row in writers.read_jsonl(os.path.join(reference[0], "full",
                                                             "metrics.jsonl"))]


def test_a_damaged_line_inside_the_log_is_one_error_line_naming_it(tmp_path, reference):
  wd = copy_run(reference, tmp_path / "w")
  run_full(wd, "--config.train.steps=20")
  path = os.path.join(wd, "full", "metrics.jsonl")
  with open(path) as fh:
    lines = fh.readlines()
  lines[1] = lines[1][:10] + "\n"
  with open(path, "w") as fh:
    fh.writelines(lines)
  line = one_error_line(run_full(wd, code=2))
  assert f"{path}: line 2 is damaged" in line and "delete the file" in line


def copy_run(reference, dest):
  """The reference workdir's warm-up and teacher (and its finished ``full``) at ``dest``."""
  shutil.copytree(reference[0], dest, ignore=shutil.ignore_patterns(".lock"))
  shutil.rmtree(os.path.join(dest, "full"))
  return str(dest)


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete", "garbage", "[1, 2]"])
def test_a_damaged_summary_or_teacher_is_rebuilt_with_a_warning(tmp_path, reference, damage):
  wd = str(tmp_path / "w")
  shutil.copytree(reference[0], wd, ignore=shutil.ignore_patterns(".lock"))
  summary = os.path.join(wd, "full", "summary.json")
  first = run_full(wd)  # finished: prints the stored summary
  for path in (summary, os.path.join(wd, "teacher", "teacher.npz"),
               os.path.join(wd, "teacher", "targets_train.npy")):
    spoil(path, damage)
  r = run_full(wd, "--target=fixed")  # reads T_fix and the teacher
  assert "Traceback" not in r.stderr
  again = run_full(wd)
  assert again.stdout == first.stdout  # the summary, rebuilt from the final checkpoint
  if damage != "delete":
    assert f"{summary}: damaged" in again.stderr
  assert final_digest(wd) == reference[1]


def spoil(path, damage):
  if damage == "delete":
    os.remove(path)
    return
  with open(path, "rb") as fh:
    data = fh.read()
  with open(path, "wb") as fh:
    fh.write({"truncate": data[: len(data) // 2], "empty": b"",
              "garbage": os.urandom(200), "[1, 2]": b"[1, 2]"}[damage])


def test_a_full_disk_is_one_line_and_the_rerun_resumes_bit_identical(
    tmp_path, reference, monkeypatch):
  wd = copy_run(reference, tmp_path / "w")
  calls = {"n": 0}
  write = writers.JsonLinesWriter.write_scalars

  def fill_the_disk(self, step, scalars):
    calls["n"] += 1
    if step > 25:
      raise OSError(errno.ENOSPC, "No space left on device", self.path)
    write(self, step, scalars)
  monkeypatch.setattr(writers.JsonLinesWriter, "write_scalars", fill_the_disk)
  line = one_error_line(run_full(wd, code=2))
  assert line == (f"error: no space left on the device writing {wd}/full/metrics.jsonl; free "
                  "space and rerun the same command (finished phases and the last good "
                  "checkpoint are kept)")
  monkeypatch.undo()
  r = run_full(wd)
  assert "resuming from step 20" in r.stderr
  assert final_digest(wd) == reference[1]


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  wd = tmp_path / "a_file"
  wd.write_text("not a directory")
  line = one_error_line(run_full(str(wd), code=2))
  assert str(wd) in line and "choose another --workdir" in line


def test_the_api_edges_are_value_errors_naming_the_argument(tmp_path):
  rng = np.random.default_rng(0)
  t = rng.dirichlet(np.ones(5), 40).astype(np.float32)
  logits = rng.normal(size=(40, 5)).astype(np.float32)
  s16 = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float16)))
  assert s16.dtype == np.float16
  # Half-precision rows are checked at their precision and cast up: margin takes them,
  # and takes what renormalize returns.
  assert np.isfinite(float(certificate.margin(t, s16)))
  rows = certificate.validate_simplex("student", s16, renormalize=True)
  assert float(certificate.margin(t, rows)) == pytest.approx(float(certificate.margin(t, s16)),
                                                             abs=1e-3)
  fitted = teacher.fit_teacher(rng.normal(size=(60, 3)), num_components=(2,))
  cases = [
      (lambda: certificate.certify(lambda x: x, lambda x: x, None), "batches: expected an"),
      (lambda: certificate.certify(None, lambda x: x, [t]), "witness_fn: expected a callable"),
      (lambda: certificate.CertificateStats.zeros(2.5), "k: expected an integer"),
      (lambda: certificate.CertificateStats.zeros("a"), "k: expected an integer"),
      (lambda: teacher.frozen(None, fitted), "encoder_fn: expected a callable"),
      (lambda: teacher.frozen(lambda x: x, None), "fitted: expected the FittedTeacher"),
      (lambda: teacher.fit_teacher(np.zeros((200, 0))), r"features: expected shape \(N >= 2"),
  ]
  for call, match in cases:
    with pytest.raises(ValueError, match=match):
      call()
  npz = tmp_path / "mixed.npz"
  np.savez(npz, x=np.zeros((20, 8, 8), np.float32), x_test=np.zeros((10, 64), np.float32))
  with pytest.raises(ValueError, match=r"x_test: examples of shape \(64,\) differ"):
    data.load_dataset(f"npz:{npz}")
  line = one_error_line(launch("train.py", f"--workdir={tmp_path / 'w'}",
                               "--config=digits:smoke", "--config.model.hidden=abc", code=2))
  assert line == "error: config.model.hidden: each entry must be a layer width >= 1, got 'abc'"


def test_a_full_disk_at_a_checkpoint_save_is_one_line_and_keeps_the_last_good_one(
    tmp_path, reference, monkeypatch):
  from certvae_jax.training import checkpoint  # pylint: disable=import-outside-toplevel
  wd = copy_run(reference, tmp_path / "w")
  save = checkpoint.Checkpointer.save

  def fill_the_disk(self, step, state, meta):
    if step >= 30:
      raise OSError(errno.ENOSPC, "No space left on device", f"{self.directory}/{step}")
    save(self, step, state, meta)
  monkeypatch.setattr(checkpoint.Checkpointer, "save", fill_the_disk)
  line = one_error_line(run_full(wd, code=2))
  assert line.startswith(f"error: no space left on the device writing {wd}/full/checkpoints/30")
  monkeypatch.undo()
  r = run_full(wd)
  assert "resuming from step 20" in r.stderr
  assert final_digest(wd) == reference[1]


def test_sigterm_outside_a_phase_is_one_line_and_the_handlers_come_back(capsys):
  from certvae_jax import cli  # pylint: disable=import-outside-toplevel
  before = signal.getsignal(signal.SIGTERM)

  def teacher_search():  # SIGTERM while no phase trains
    os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(SystemExit) as stopped:
    cli.run_guarded(teacher_search)
  assert stopped.value.code == 143
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: stopped by SIGTERM outside training (a phase saves the step it "
                 "reached); finished phases and checkpoints are kept; rerun the same command "
                 "to resume"]
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_disk_too_small_for_the_next_checkpoint_is_refused_before_orbax_writes(
    tmp_path, reference, monkeypatch):
  """Orbax running out of space mid-write prints pages of tracebacks from its threads; the
  checkpointer checks the free space first and stops with one line instead."""
  from certvae_jax.training import checkpoint  # pylint: disable=import-outside-toplevel
  wd = copy_run(reference, tmp_path / "w")
  real = shutil.disk_usage

  def full_after_one_checkpoint(path):
    usage = real(path)
    saved = os.path.isdir(path) and any(n.isdigit() for n in os.listdir(path))
    return usage._replace(free=4096) if saved and "full" in str(path) else usage
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", full_after_one_checkpoint)
  line = one_error_line(run_full(wd, code=2))
  assert line.startswith(f"error: no space left on the device writing {wd}/full/checkpoints;")
  with Checkpointer(os.path.join(wd, "full", "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [10]
  monkeypatch.undo()
  r = run_full(wd)
  assert "resuming from step 10" in r.stderr
  assert final_digest(wd) == reference[1]


def test_a_signal_while_a_launcher_loads_is_one_line(capsys):
  from certvae_jax import startup  # pylint: disable=import-outside-toplevel
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    startup.stop_quietly_while_loading()
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
      with pytest.raises(SystemExit) as stopped:
        os.kill(os.getpid(), signum)
      assert stopped.value.code == code
      name = signal.Signals(signum).name
      assert capsys.readouterr().err == (f"error: stopped by {name} while starting; nothing "
                                         "was written\n")
  finally:
    for s, handler in before.items():
      signal.signal(s, handler)
