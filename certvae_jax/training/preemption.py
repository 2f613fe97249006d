"""Preemption: SIGTERM or Ctrl-C saves the step reached and stops the run cleanly.

Preemptible VMs and schedulers (Slurm, Kubernetes) send SIGTERM and wait a grace period
before killing. While a phase trains, the first SIGTERM or SIGINT only sets a flag: the
loop finishes the call in flight, saves a checkpoint of that step (blocking until it is
committed), flushes the metric writers and raises :class:`Preempted`; the launchers print
one line and exit 143 (SIGTERM) or 130 (SIGINT). Rerunning the same command resumes from
that step, bit-identical to a run never stopped. A second signal stops the process at
once; the last committed checkpoint is kept (a step becomes visible only when its write
is committed).

Under ``jax.distributed`` the hosts must save the same step: JAX's preemption service
turns a SIGTERM on any host into a sync point that every host reaches at the same step
(:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`), so no Python
handler is installed there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

import jax

from certvae_jax.training.loop import Hook, Loop, Rows

# The shell's convention, 128 + the signal's number; the same every time.
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Preempted(Exception):
  """A phase stopped by a signal after saving the step it reached."""

  def __init__(self, phase: str, step: int, signum: int):
    self.phase, self.step, self.signum = phase, step, signum
    self.exit_code = EXIT_CODES.get(signum, 143)
    super().__init__(f"{phase}: preempted at step {step} ({signal.Signals(signum).name}); "
                     "saved; rerun the same command to resume")


class Notice:
  """The signal received while a phase trains, if any (set by :func:`watch`)."""

  def __init__(self):
    self.signum: int | None = None

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self.signum is not None:  # a second signal: stop now, without a traceback
      os.write(2, f"{signal.Signals(signum).name} again: stopped at once; the last "
               "committed checkpoint is kept\n".encode())
      os._exit(EXIT_CODES.get(signum, 143))
    self.signum = signum


@contextlib.contextmanager
def watch() -> Iterator[Notice]:
  """Within the block, SIGTERM and SIGINT set the notice instead of stopping the process
  (single-process runs on the main thread only); the previous handlers come back after."""
  notice = Notice()
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield notice
    return
  previous = {s: signal.signal(s, notice._handle) for s in EXIT_CODES}
  try:
    yield notice
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


class PreemptionHook(Hook):
  """Saves and raises :class:`Preempted` at the first sync after a notice; the loop's last
  hook, so that the step's evaluation and periodic checkpoint run first."""

  def __init__(self, notice: Notice):
    self.notice = notice
    self._sync_point = False

  def wants_sync(self, step: int, last: bool) -> bool:
    del last
    if jax.process_count() > 1:  # called at every step, as the preemption service asks
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      self._sync_point = self._sync_point or multihost_utils.reached_preemption_sync_point(step)
    return self._sync_point or self.notice.signum is not None

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    del rows
    if not self._sync_point and self.notice.signum is None:
      return
    if loop.last_saved != step:
      loop.save()
    if loop.checkpointer is not None:
      loop.checkpointer.wait()
    loop.write_row()
    raise Preempted(loop.name, step, self.notice.signum or signal.SIGTERM)
