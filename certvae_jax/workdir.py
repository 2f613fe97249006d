"""One run per workdir at a time: an advisory lock that dies with its process.

``fcntl.flock`` locks belong to the open file: the operating system releases them
when the process exits for any reason, ``kill -9`` included, so a crashed run never
leaves a stale lock behind (unlike a lock *file* whose existence is the lock).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

LOCK_NAME = ".lock"


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
