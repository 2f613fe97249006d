"""Metric writers: where a run's scalars go.

A writer has CLU's ``metric_writers`` methods (``write_scalars(step, scalars)``,
``flush()``, ``close()``) without depending on CLU, whose writers import TensorFlow.
Scalars are flat ``{name: float}`` dicts with ``/``-separated names:
``train_step/loss`` (the training step's terms, every ``train.log_every`` steps),
``train/margin`` and ``test/margin`` (the certificate and diagnostics of each
evaluation), and so on. The run writes one call per step, so a step's row is whole.

``metrics.jsonl`` is one writer (:class:`JsonLinesWriter`). Another plugs in by name::

    writers.register("mine", lambda phase_dir: MyWriter(phase_dir))

and ``--config.train.writers=jsonl,mine`` (or ``train.train(..., writers=[...])``).
``tensorboard`` (:class:`TensorBoardWriter`) ships too; ``--config.log.tensorboard=True``
adds it. Only process 0 writes.

A writer may also have ``rewind(step)``, called when the rows written past ``step`` are
abandoned: by the loop after it restores an earlier checkpoint inside a run (a guard's
rollback), and by the runner when it resumes a phase from a checkpoint. ``metrics.jsonl``
drops them; the TensorBoard writer has TensorBoard drop them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from certvae_jax import files, plugins
from certvae_jax.files import read_jsonl  # the log's reader, beside its writer


class MetricWriter(Protocol):
  """What a run calls; CLU's ``MetricWriter`` names."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    ...

  def flush(self) -> None:
    ...

  def close(self) -> None:
    ...


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Nested metrics -> flat scalars: dicts and lists become ``/``-joined names.

  Booleans become 0.0 / 1.0; ``None`` and strings are left out.
  """
  out: dict[str, float] = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out.update(flatten(value, name))
    elif isinstance(value, (list, tuple)):
      out.update(flatten({str(i): v for i, v in enumerate(value)}, name))
    elif isinstance(value, (bool, np.bool_)):
      out[name] = float(value)
    elif isinstance(value, (int, float, np.integer, np.floating)):
      out[name] = float(value)
  return out


class JsonLinesWriter:
  """``metrics.jsonl``: one JSON object per written step, ``{"step": s, name: value, ...}``.

  Appends, so that a resumed run continues the file (after :func:`truncate_jsonl` drops
  the rows past the checkpoint it resumes from). The file is opened for each row, so a
  truncation between rows is always seen. Non-finite values are written as JSON's
  ``NaN`` / ``Infinity`` (Python's ``json`` reads them back).
  """

  def __init__(self, path: str):
    self.path = path

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    with open(self.path, "a") as fh:
      fh.write(json.dumps({"step": int(step), **scalars}) + "\n")

  def write_event(self, step: int, event: Mapping[str, Any]) -> None:
    """One event row, ``{"step": s, "event": kind, ...}`` (strings kept)."""
    self.write_scalars(step, event)

  def rewind(self, step: int) -> None:
    """Drops the rows past ``step``: training goes on from that step's checkpoint."""
    truncate_jsonl(self.path, step, resuming=False)

  def flush(self) -> None:
    """Rows are written when given; nothing is held back."""

  def close(self) -> None:
    """Nothing stays open between rows."""


def truncate_jsonl(path: str, last_step: int, resuming: bool = True) -> None:
  """Keeps the rows up to ``last_step`` (left by a run that died after writing them).

  A rollback's event row sits at the step it rolled back to (``rollback_to``). The
  checkpoint of that step was saved before the rollback, so a run resuming from it
  replays the rollback and writes the row again: ``resuming`` drops such rows at
  ``last_step``. A rollback inside the run (``resuming=False``) keeps them.
  """
  if not os.path.exists(path):
    return

  def keep(row: dict[str, Any]) -> bool:
    if resuming and "rollback_to" in row and row["step"] == last_step:
      return False
    return row["step"] <= last_step

  rows = [row for row in read_jsonl(path) if keep(row)]
  files.write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


TENSORBOARD_EXTRA = 'pip install -e ".[tensorboard]"'


def _has_tensorboardx() -> bool:
  return importlib.util.find_spec("tensorboardX") is not None


def require_tensorboard(field: str = "config.log.tensorboard") -> None:
  """Raises ``ValueError`` naming the extra when tensorboardX is not installed."""
  if not _has_tensorboardx():
    raise ValueError(f"{field}: TensorBoard event files need tensorboardX, which is not "
                     f"installed: {TENSORBOARD_EXTRA} (or pip install tensorboardX)")


class TensorBoardWriter:
  """TensorBoard event files in the phase directory, the same scalars as ``metrics.jsonl``.

  Uses ``tensorboardX``'s event-file writer and protos (neither TensorFlow nor PyTorch
  needed), synchronously: a row is in the file once :meth:`flush` returns, so a run
  stopped at once keeps every row it flushed (``SummaryWriter`` queues events for a
  thread, and loses the queue). Each event file starts with a purge step: TensorBoard
  drops the events of earlier files from that step on. After :meth:`rewind` (a resumed
  run, a rollback) the next file purges from the step after the one kept, as
  ``metrics.jsonl`` is truncated; otherwise (a phase started again from scratch) from its
  first row's step.
  """

  def __init__(self, logdir: str):
    require_tensorboard()
    self.logdir = logdir
    self._file = None
    self._purge_step: int | None = None
    self._files = 0

  def _open(self, purge_step: int) -> None:
    # pylint: disable=import-outside-toplevel
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2
    os.makedirs(self.logdir, exist_ok=True)
    self._files += 1
    # tensorboardX names a file by the second it opened and the host; a second file in
    # the same second would overwrite the first without this suffix.
    self._file = EventsWriter(os.path.join(self.logdir, "events"),
                              f".{os.getpid()}.{self._files:04d}")
    start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    self._file.write_event(event_pb2.Event(wall_time=time.time(), step=int(purge_step),
                                           session_log=start))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
    if self._file is None:
      self._open(int(step) if self._purge_step is None else self._purge_step)
      self._purge_step = None
    values = [summary_pb2.Summary.Value(tag=name, simple_value=float(value))
              for name, value in scalars.items()]
    self._file.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary_pb2.Summary(value=values)))

  def rewind(self, step: int) -> None:
    """Rows past ``step`` are abandoned: the next row opens a new file whose purge step
    is ``step + 1``, so TensorBoard keeps the rows up to ``step``, as ``metrics.jsonl``
    does."""
    self.close()
    self._purge_step = int(step) + 1

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


WriterFactory = Callable[[str], MetricWriter]
_REGISTRY = plugins.Registry("config.train.writers", "writer", {
    "jsonl": lambda phase_dir: JsonLinesWriter(os.path.join(phase_dir, "metrics.jsonl")),
    "tensorboard": TensorBoardWriter,
})


def register(name: str, factory: WriterFactory) -> None:
  """Registers ``factory(phase_dir) -> MetricWriter`` for ``config.train.writers``."""
  _REGISTRY.register(name, factory)


def check_names(names: Any) -> None:
  """Raises ``ValueError`` unless every name is registered or an import path that loads."""
  _REGISTRY.check(names)


def run_writer_names(config: Any) -> str:
  """``config.train.writers``, plus ``tensorboard`` when ``config.log.tensorboard``."""
  names = str(config.train.writers)
  log = config.get("log")
  if log is not None and log.get("tensorboard") and "tensorboard" not in names.split(","):
    names = f"{names},tensorboard" if names else "tensorboard"
  return names


def create(names: Any, phase_dir: str) -> list[MetricWriter]:
  """The writers named in ``config.train.writers`` for one phase directory.

  Each name is registered (:func:`register`) or an import path ``package.module:Name``
  of a writer class or factory, called with the phase directory.

  Raises:
    ValueError: an unknown name or a path that does not load.
  """
  return _REGISTRY.create(names, phase_dir)
