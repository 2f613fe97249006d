"""The one teacher type a run reads, and the registry of teacher kinds.

``config.teacher.kind`` names a registered :class:`TeacherKind`, with an argument after
a colon where the kind takes one:

==================  ==============================================================
``gmm``             paper 1: a GMM searched on the warm-up encoder's means, frozen with
                    the encoder, so that ``T(x)`` is a function of any input
``label_smoothed``  paper 2: ``(1 - eps) e_y + eps / K`` from the labels of both splits
``npz:PATH``        your own teacher, given by its rows ``train`` and ``test`` in PATH
==================  ==============================================================

Whatever its kind, a run reads the seed's teacher as a :class:`Teacher`: its rows on the
splits, ``T(x)`` where the kind has one, its K and its artifact's record.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import numpy as np

from certvae_jax import plugins
from certvae_jax.teachers import artifact, rows as rows_lib
from certvae_jax.teachers.frozen import FrozenTeacher, label_smoothed


class Teacher(NamedTuple):
  """A seed's teacher, loaded from its artifact (paper 1, section 2.2).

  Attributes:
    kind: the registered kind that made it (``'gmm'``, ``'label_smoothed'``, ``'rows'``).
    info: the artifact's record (``teacher.json``): id, K, QC scores, how it was made.
    function: ``T(x)`` as frozen arrays (:class:`~certvae_jax.teachers.frozen.
      FrozenTeacher`) for a kind that is a function of the input; ``None`` for a
      teacher given by its rows on the two splits.
    directory: the artifact's directory.
  """
  kind: str
  info: dict[str, Any]
  function: FrozenTeacher | None
  directory: str

  @property
  def num_classes(self) -> int:
    return int(self.info["num_components"])

  def cached_rows(self, split: str) -> np.ndarray:
    """The rows kept in the artifact: ``T_fix`` on ``'train'`` (every kind), and on
    ``'test'`` for a teacher given by its rows."""
    if split == "train":
      return artifact.load_train_targets(self.directory)
    if split == "test" and self.function is None:
      return artifact.load_test_targets(self.directory)
    raise ValueError(f"teacher: a {self.kind} teacher keeps no {split!r} rows; evaluate "
                     "its function")


def load(directory: str) -> Teacher:
  """The teacher whose artifact is in ``directory`` (its content hash checked).

  Raises:
    ValueError: a missing or damaged artifact.
  """
  function, info = artifact.load_teacher(directory)
  return Teacher(str(info.get("kind", "gmm")), info, function, directory)


class RowsMade(NamedTuple):
  """What a kind given by its rows makes: the rows of both splits and what to record."""
  train: np.ndarray
  test: np.ndarray
  info: dict[str, Any]          # added to the artifact's record (the run adds the QC scores)
  description: str              # for the log line, e.g. 'label smoothing eps=0.1'


class TeacherKind(NamedTuple):
  """A kind of teacher.

  Attributes:
    name: the artifact's ``kind``.
    num_classes: ``(teacher_config, data, arg) -> K``: checks that the data can give
      this teacher (raising ``ValueError`` naming ``config.teacher.*``) and returns K.
    make_rows: ``(teacher_config, data, arg) -> RowsMade`` for a teacher given by its
      rows on both splits; ``None`` for the GMM, which a run fits on the warm-up means
      (:mod:`certvae_jax.training.teacher_stage`).
    fingerprint: ``arg -> fields`` that identify the teacher beyond the config (the
      digest of a rows file), or ``None``.
    argument: what the kind's ``:ARG`` is (``'the rows file'``), which it then requires;
      ``''``: it takes none.
  """
  name: str
  num_classes: Callable[[Any, Any, str | None], int]
  make_rows: Callable[[Any, Any, str | None], RowsMade] | None = None
  fingerprint: Callable[[str | None], dict[str, Any]] | None = None
  argument: str = ""


def _gmm_classes(t: Any, data: Any, arg: str | None) -> int:
  del arg
  for k in t.components:
    if int(k) > len(data.x_train):
      raise ValueError(f"config.teacher.components: K={k} exceeds the {len(data.x_train)} "
                       "training examples")
  return int(t.components[0])


def _label_classes(t: Any, data: Any, arg: str | None) -> int:
  del t, arg
  if data.y_train is None or data.y_test is None:
    raise ValueError("config.teacher.kind: 'label_smoothed' needs labels (y and y_test) in "
                     f"the data source {data.name!r}")
  if data.num_classes < 2:
    raise ValueError("config.teacher.kind: 'label_smoothed' needs at least 2 classes")
  return int(data.num_classes)


def _label_rows(t: Any, data: Any, arg: str | None) -> RowsMade:
  del arg
  eps, k = float(t.eps), int(data.num_classes)
  train = label_smoothed(data.y_train, k, eps)
  return RowsMade(train, label_smoothed(data.y_test, k, eps), {"eps": eps},
                  f"label smoothing eps={eps}")


def _rows_classes(t: Any, data: Any, path: str | None) -> int:
  del t
  train, _ = rows_lib.load_rows(path, len(data.x_train), len(data.x_test))
  return int(train.shape[1])


def _rows_rows(t: Any, data: Any, path: str | None) -> RowsMade:
  del t
  train, test = rows_lib.load_rows(path, len(data.x_train), len(data.x_test))
  return RowsMade(train, test, {"path": os.path.abspath(path)}, f"rows from {path}")


_REGISTRY = plugins.Registry("config.teacher.kind", "teacher kind", {
    "gmm": TeacherKind("gmm", _gmm_classes),
    "label_smoothed": TeacherKind("label_smoothed", _label_classes, _label_rows),
    "npz": TeacherKind("rows", _rows_classes, _rows_rows,
                       lambda path: {"rows_digest": rows_lib.file_digest(path)},
                       argument="the rows file"),
})


def register(name: str, kind: TeacherKind) -> TeacherKind:
  """Adds a teacher kind, named in configs as ``name`` (or ``name:ARG``)."""
  return _REGISTRY.register(name, kind)


def parse(value: Any) -> tuple[TeacherKind, str | None]:
  """``config.teacher.kind`` -> ``(kind, argument or None)``.

  Raises:
    ValueError: naming ``config.teacher.kind``, for an unknown kind or a missing argument.
  """
  if not isinstance(value, str):
    raise ValueError(f"config.teacher.kind: expected a string such as 'gmm', 'label_smoothed' "
                     f"or 'npz:PATH', got {value!r}")
  name, sep, arg = value.partition(":")
  if name not in _REGISTRY.entries:
    raise ValueError(f"config.teacher.kind: expected one of {_REGISTRY.names()} ('npz:PATH': "
                     f"rows 'train' and 'test' of your own teacher), got {value!r}")
  kind = _REGISTRY.entries[name]
  if kind.argument and not arg:
    raise ValueError(f"config.teacher.kind: {name!r} needs {kind.argument}, '{name}:ARG'; got "
                     f"{value!r}")
  if not kind.argument and sep:
    raise ValueError(f"config.teacher.kind: {name!r} takes no argument, got {value!r}")
  return kind, (arg if sep else None)
