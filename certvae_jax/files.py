"""Run files that survive a crash: atomic whole-file writes, append-only logs whose torn
last line is dropped, and reads that name the file when it is damaged.

A kill, a full disk or a preemption can stop a write anywhere. Whole files (summaries,
the teacher, cached targets, predictions, tables) are written to a temporary name in the
same directory, flushed to disk and renamed over the old one, so a reader finds the old
file or the new one, never a torn one. An append-only log (``metrics.jsonl``) is written
a whole line per call, so a crash leaves at most one incomplete last line, which readers
drop with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from typing import IO, Any, Callable

_log = logging.getLogger(__name__)


def atomic_write(path: str, write: Callable[[IO[Any]], Any], binary: bool = True) -> None:
  """Calls ``write(fh)`` on a temporary file beside ``path``, syncs it and renames it to
  ``path``; on failure the temporary file is removed and ``path`` is untouched."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb" if binary else "w") as fh:
      write(fh)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically (:func:`atomic_write`)."""
  atomic_write(path, lambda fh: json.dump(obj, fh, indent=1, allow_nan=True), binary=False)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` atomically (:func:`atomic_write`)."""
  atomic_write(path, lambda fh: fh.write(text), binary=False)


class DamagedFile(ValueError):
  """A run file that exists but cannot be read; the message names it and what to do."""


def read_json(path: str, expect: type | None = dict) -> Any | None:
  """The JSON at ``path`` (of type ``expect`` unless None), or None if there is no file.

  Raises:
    DamagedFile: the file is not valid JSON, or not of the expected type.
  """
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as fh:
      obj = json.load(fh)
  except (ValueError, UnicodeDecodeError) as e:
    raise DamagedFile(f"{path}: damaged ({e}); delete it and rerun to rebuild it") from e
  if expect is not None and not isinstance(obj, expect):
    raise DamagedFile(f"{path}: damaged (a JSON {type(obj).__name__}, expected a "
                      f"{expect.__name__}); delete it and rerun to rebuild it")
  return obj


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The rows of an append-only JSON-lines log (empty if there is no file).

  An incomplete last line (a crash during its write) is dropped with a warning naming the
  file; a damaged line before the last is a :class:`DamagedFile`.
  """
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8", errors="replace") as fh:
    lines = fh.readlines()
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      if not isinstance(row, dict):
        raise ValueError(f"a JSON {type(row).__name__}, expected an object")
    except ValueError as e:
      if i == len(lines) - 1:
        _log.warning("%s: dropped an incomplete last line (%d bytes), left by a run that "
                     "stopped while writing it", path, len(line))
        break
      raise DamagedFile(f"{path}: line {i + 1} is damaged ({e}); delete the file (its "
                        "rows are not needed to resume) or repair the line") from e
    rows.append(row)
  return rows
