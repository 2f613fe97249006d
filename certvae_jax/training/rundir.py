"""One seed's run directory: its layout, fingerprints, summaries, lock and overwrite.

Layout::

    WORKDIR/warmup/{checkpoints/, metrics.jsonl, summary.json}
    WORKDIR/teacher/{teacher.npz, teacher.json, targets_train.npy}
    WORKDIR/<mode>[_<tag>][_fixed]/{checkpoints/, metrics.jsonl, summary.json,
                                    predictions.npz}

One run per workdir at a time: an advisory ``fcntl.flock`` lock, which belongs to the
open file, so the operating system releases it when the process exits for any
reason, ``kill -9`` included; a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Callable, TypeVar

import ml_collections

from certvae_jax import distributed, files
from certvae_jax.training.checkpoint import Checkpointer, IncompatibleCheckpoint

LOCK_NAME = ".lock"
_log = logging.getLogger(__name__)
T = TypeVar("T")


def fingerprint(config: ml_collections.ConfigDict, stage: str,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """What shapes a stage's results, for its checkpoint metadata: the data, model and
  seed, and ``extra`` fields (e.g. ``{"warmup.alpha_kl": 1.0}``).

  Step counts and logging intervals are left out so a run can be extended, and
  ``data.on_device`` because it moves the same batches, not different ones.

  Returns:
    ``{"fingerprint": hash, "fingerprint_fields": {name: value}}``; the fields let a
    mismatch name what differs (see :func:`certvae_jax.training.checkpoint.check_compatible`).
  """
  fields = {"stage": stage, "seed": config.seed}
  fields.update(_flat("data", {k: v for k, v in config.data.to_dict().items()
                               if k != "on_device"}))
  fields.update(_flat("model", config.model.to_dict()))
  for name, value in (extra or {}).items():
    fields.update(_flat(name, value) if isinstance(value, dict) else {name: value})
  fields = json.loads(json.dumps(fields, sort_keys=True, default=str))  # as stored in JSON
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
  return {"fingerprint": digest, "fingerprint_fields": fields}


def _flat(prefix: str, tree: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}.{key}"
    out.update(_flat(name, value) if isinstance(value, dict) else {name: value})
  return out


class WorkdirLock:
  """A re-entrant (within one object) exclusive lock on ``workdir``.

  Raises:
    ValueError: on entry, when another process (or another lock object) holds it.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._fd: int | None = None
    self._depth = 0

  def __enter__(self) -> "WorkdirLock":
    if self._depth == 0:
      os.makedirs(self.workdir, exist_ok=True)
      path = os.path.join(self.workdir, LOCK_NAME)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise ValueError(f"workdir: {self.workdir!r} is in use by another run (pid "
                           f"{holder}); wait for it or use another --workdir") from e
        raise
      os.ftruncate(fd, 0)
      os.pwrite(fd, str(os.getpid()).encode(), 0)
      self._fd = fd
    self._depth += 1
    return self

  def __exit__(self, *exc) -> None:
    self._depth -= 1
    if self._depth == 0 and self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def clear_workdir(workdir: str) -> None:
  """Deletes everything in ``workdir`` but its lock (used by ``--overwrite``)."""
  for name in os.listdir(workdir):
    if name == LOCK_NAME:
      continue
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


class RunDir:
  """Paths and guarded access for one seed's workdir.

  Args:
    root: the workdir.
    overwrite: clear a workdir made by an incompatible run (and retry once) instead of
      refusing it.
  """

  def __init__(self, root: str, overwrite: bool = False):
    self.root = root
    self.overwrite = overwrite
    self.main = distributed.is_main()  # process 0 writes; see distributed.py
    self._lock = WorkdirLock(root) if self.main else contextlib.nullcontext()

  def phase(self, name: str) -> str:
    return os.path.join(self.root, name)

  def summary_path(self, name: str) -> str:
    return os.path.join(self.phase(name), "summary.json")

  def metrics_path(self, name: str) -> str:
    return os.path.join(self.phase(name), "metrics.jsonl")

  def checkpoints(self, name: str) -> Checkpointer:
    return Checkpointer(os.path.join(self.phase(name), "checkpoints"))

  def has_checkpoints(self, name: str) -> bool:
    ckdir = os.path.join(self.phase(name), "checkpoints")
    return os.path.isdir(ckdir) and bool(os.listdir(ckdir))

  def latest_checkpoint_step(self, name: str) -> int | None:
    """The step of phase ``name``'s latest checkpoint, ``None`` when it has none."""
    if not self.has_checkpoints(name):
      return None
    with self.checkpoints(name) as ckpt:
      return ckpt.latest_step()

  def read_summary(self, name: str) -> dict[str, Any] | None:
    """Phase ``name``'s summary; None when there is none, or when it is damaged (with a
    warning: the phase rebuilds it from its final checkpoint)."""
    try:
      return files.read_json(self.summary_path(name))
    except files.DamagedFile as e:
      _log.warning("%s (rebuilding it from the final checkpoint)", str(e).split("; delete")[0])
      return None

  def guarded(self, fn: Callable[[], T], on_clear: Callable[[], None] = lambda: None) -> T:
    """Runs ``fn`` holding the workdir lock; with ``overwrite``, an incompatible workdir
    is cleared (``on_clear`` then drops what the caller cached) and ``fn`` retried once."""
    with self._lock:
      try:
        return fn()
      except IncompatibleCheckpoint as e:
        if not self.overwrite:
          raise
        _log.warning("%s\n--overwrite: clearing %r and starting again", e, self.root)
        if self.main:
          clear_workdir(self.root)
        distributed.barrier("overwrite")
        on_clear()
        return fn()
