"""Orbax checkpoints holding everything a run needs to continue exactly.

A checkpoint at step ``t`` is a composite of

* ``state``: the train state pytree (parameters, optimizer state, step, RNG key);
* ``meta``: JSON run metadata: the phase, the data position (data seed and step:
  batches are a pure function of them, see :mod:`certvae_jax.data`), the
  fingerprint of the config that shapes the run, the teacher artifact id, and a
  SHA-256 digest of every array of the state.

Orbax writes each step into a temporary directory and renames it when complete, so
an interrupted save never replaces the last good checkpoint. On restore the digest
is recomputed: a truncated or corrupted step (one that fails to load, or loads
different bytes) is reported, moved to ``<dir>_damaged/``, and the previous good
step is used instead. A wrong restore is never silent.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

_log = logging.getLogger(__name__)


class IncompatibleCheckpoint(ValueError):
  """A checkpoint or artifact made by a run with another config, teacher or data."""


def state_digest(state: Any) -> str:
  """SHA-256 over the bytes, dtypes and shapes of every leaf of ``state``."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{arr.dtype}{arr.shape}".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


class _PinnedSteps(ocp.checkpoint_managers.PreservationPolicy):
  """Keeps the steps in a set that may change between saves (see :meth:`Checkpointer.pin`)."""

  def __init__(self, steps: set[int]):
    self.steps = steps

  def should_preserve(self, checkpoints, *, context):
    del context
    return [info.step in self.steps for info in checkpoints]


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` for one phase.

  Args:
    directory: where the steps live.
    keep: the latest steps kept (at least 2, so a damaged latest step has a fallback).
      Steps passed to :meth:`pin` are kept as well.
  """

  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._pinned: set[int] = set()
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(n=max(2, keep)), _PinnedSteps(self._pinned)])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True))

  def latest_step(self) -> int | None:
    self._manager.wait_until_finished()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.wait_until_finished()
    return sorted(self._manager.all_steps())

  def pin(self, step: int | None) -> None:
    """Keeps ``step`` from now on, past the latest-N retention; ``None`` unpins all.

    A training guard pins the last checkpoint it certified, so that it can roll back to
    it however many steps were saved since. Only the one pinned step is kept.
    """
    self._pinned.clear()
    if step is not None:
      self._pinned.add(int(step))

  def discard_after(self, step: int) -> list[int]:
    """Deletes every saved step after ``step`` (a branch a rollback abandons); returns them.

    Those checkpoints hold a trajectory the run no longer follows: a resume must never
    pick one up.
    """
    self._manager.wait_until_finished()
    gone = [s for s in self._manager.all_steps() if s > step]
    for s in gone:
      self._manager.delete(s)
    return sorted(gone)

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves (with the state's digest in ``meta``); the write finishes in the background.

    Returns once the arrays are on the host (the digest needs them there); Orbax then
    writes and commits the step on its own thread while training goes on. A step is
    visible only when committed (written to a temporary name, then renamed), so a crash
    during the write keeps the previous step. The next save, a restore or :meth:`close`
    waits for the write to finish.
    """
    meta = dict(meta, state_digest=state_digest(state))
    self._manager.wait_until_finished()
    self._check_space(step, state)
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def _check_space(self, step: int, state: Any) -> None:
    """Refuses a save the disk cannot hold, before Orbax starts writing: a write that
    runs out of space fails inside Orbax's background threads with pages of noise.

    Raises:
      OSError: ``ENOSPC``, naming the checkpoint directory and the sizes.
    """
    need = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(state))
    need += 2**18  # metadata and the file system's own blocks
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device (a checkpoint of step {step} "
                    f"needs about {need / 2**20:.1f} MiB; {free / 2**20:.1f} MiB free)",
                    self.directory)

  def read_meta(self, step: int | None = None) -> dict[str, Any] | None:
    """The JSON metadata of ``step`` (default: the latest), without its arrays; None if
    there is no checkpoint or the metadata cannot be read (a damaged step: restoring it
    reports and sets it aside)."""
    self._manager.wait_until_finished()
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    try:
      return dict(self._manager.restore(int(step), args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta)
    except Exception:  # pylint: disable=broad-except  # unreadable = damaged; restore decides
      return None

  def _restore_step(self, template: Any, step: int, sharding) -> tuple[Any, dict[str, Any]]:
    self._manager.wait_until_finished()
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), template)
    out = self._manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    digest = out.meta.get("state_digest")
    if digest != state_digest(out.state):
      raise ValueError("its arrays do not match the digest recorded when it was saved")
    return out.state, out.meta

  def restore(self, template: Any, step: int | None = None,
              sharding: jax.sharding.Sharding | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores and verifies ``(state, meta)``.

    Args:
      template: a pytree with the structure, shapes and dtypes of the state (arrays
        or ``jax.ShapeDtypeStruct``; values are ignored).
      step: an exact step to restore (no fallback: a damaged one is an error); by
        default the latest good step, falling back past damaged ones.
      sharding: where every restored array goes (default: the first device).

    Raises:
      ValueError: no checkpoint, or the requested / every step is damaged.
    """
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    candidates = [step] if step is not None else self.all_steps()[::-1]
    if not candidates:
      raise ValueError(f"checkpoint: no checkpoint in {self.directory!r}")
    for s in candidates:
      try:
        return self._restore_step(template, s, sharding)
      except Exception as e:  # pylint: disable=broad-except  # any failure = damaged
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if step is not None:
          raise ValueError(f"checkpoint: step {s} in {self.directory!r} is damaged "
                           f"({reason})") from e
        moved = self._quarantine(s)
        _log.warning("checkpoint: step %d in %r is damaged (%s); moved to %r, trying the "
                     "previous step", s, self.directory, reason, moved)
    raise ValueError(f"checkpoint: every checkpoint in {self.directory!r} is damaged")

  def _quarantine(self, step: int) -> str:
    """Moves a damaged step out of the manager's sight, keeping it for inspection.

    Process 0 moves it; every process then reloads the manager's list of steps.
    """
    src = os.path.join(self.directory, str(step))
    dst_dir = self.directory.rstrip("/") + "_damaged"
    dst = os.path.join(dst_dir, str(step))
    if jax.process_index() == 0:
      os.makedirs(dst_dir, exist_ok=True)
      if os.path.exists(dst):
        shutil.rmtree(dst)
      if os.path.exists(src):
        shutil.move(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices(f"quarantine-{step}")
    self._manager.reload()
    return dst

  def wait(self) -> None:
    """Blocks until the write in progress, if any, is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for a write in progress, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def check_compatible(meta: dict[str, Any], expected: dict[str, Any], where: str) -> None:
  """Raises :class:`IncompatibleCheckpoint` if any key of ``expected`` differs in ``meta``.

  A differing ``fingerprint`` is explained field by field (old value -> new value) when
  both sides carry ``fingerprint_fields``.
  """
  for key, want in expected.items():
    if key == "fingerprint_fields":
      continue  # compared through the fingerprint
    have = meta.get(key)
    if have != want:
      detail = f"{have!r}, this run has {want!r}"
      if key == "fingerprint":
        detail = _field_changes(meta.get("fingerprint_fields"),
                                expected.get("fingerprint_fields")) or detail
      raise IncompatibleCheckpoint(
          f"checkpoint: {where} was made with a different {key} ({detail}); use another "
          "--workdir, or --overwrite to replace it")


def _field_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
  if not old or not new:
    return ""
  names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in names)
