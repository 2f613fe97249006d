"""Runs ``launch/<script>.py`` with arguments, as a user does, in a subprocess or in this
process.

In this process a command skips the interpreter's start and JAX's imports (about 3 s
each on 2 cores) and reuses the library's compiled functions, so the launcher tests run
many commands quickly. It runs the script file itself as ``__main__`` (``runpy``) with
``sys.argv`` set, captures stdout and stderr, and afterwards removes the absl flags the
script defined, so the next command defines them afresh. Each test file keeps at least
one real subprocess per script (``subprocess=True``) for what only a new process shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import runpy
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Result:
  """What a command printed and its exit code (the fields of ``CompletedProcess``)."""
  returncode: int
  stdout: str
  stderr: str


def launch(script: str, *args: str, code: int | None = 0, subprocess_: bool = False,
           mock_examples: int | None = None, cwd: str = ROOT) -> Result:
  """``python launch/<script> ARGS`` run in ``cwd`` (the repository root by default),
  checked to exit with ``code`` unless it is None; with ``mock_examples``, inside
  ``tfds.testing.mock_data(num_examples=...)``."""
  path = os.path.join(ROOT, "launch", script)
  run = _in_subprocess if subprocess_ else _in_process
  r = run(path, list(args), mock_examples, cwd)
  if code is not None:
    assert r.returncode == code, (f"{script} {' '.join(args)}\n{r.stdout[-2000:]}\n"
                                  f"{r.stderr[-3000:]}")
  return r


def _in_subprocess(path: str, args: list[str], mock_examples: int | None, cwd: str) -> Result:
  if mock_examples is None:
    cmd = [sys.executable, path, *args]
  else:  # a subprocess cannot inherit the mock: a two-line wrapper enters it
    cmd = [sys.executable, "-c",
           "import runpy, sys, tensorflow_datasets as tfds\n"
           f"sys.argv = {[path, *args]!r}\n"
           f"with tfds.testing.mock_data(num_examples={mock_examples}):\n"
           f"  runpy.run_path({path!r}, run_name='__main__')\n"]
  r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
  return Result(r.returncode, r.stdout, r.stderr)


def _in_process(path: str, args: list[str], mock_examples: int | None, cwd: str) -> Result:
  from absl import flags  # pylint: disable=import-outside-toplevel
  defined_before = set(flags.FLAGS)
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  package_log = logging.getLogger("certvae_jax")
  log_state = (list(package_log.handlers), package_log.level, package_log.propagate)
  out, err = io.StringIO(), io.StringIO()
  argv, here = sys.argv, os.getcwd()
  sys.argv = [path, *args]
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _mock(mock_examples):
      try:
        runpy.run_path(path, run_name="__main__")
        code = 0
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = argv
    os.chdir(here)
    for s, handler in handlers.items():  # the script installs its own while it loads
      signal.signal(s, handler)
    for name in set(flags.FLAGS) - defined_before:
      delattr(flags.FLAGS, name)
    package_log.handlers[:], package_log.level, package_log.propagate = log_state
    from certvae_jax import cli  # pylint: disable=import-outside-toplevel
    cli._DEFINE_ERROR.clear()  # pylint: disable=protected-access
  return Result(code, out.getvalue(), err.getvalue())


def _mock(examples: int | None):
  if examples is None:
    return contextlib.nullcontext()
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.testing.mock_data(num_examples=examples)
