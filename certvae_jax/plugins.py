"""User code named in a config: ``package.module:Name`` import paths, and name lists.

The registries (models, objectives' modes, hooks, metric writers) take a registered
name or an import path, so that a user's part plugs in from the command line without
editing this package: the package must be importable (installed, or on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
from typing import Any


def load(path: str, field: str) -> Any:
  """The object named by ``package.module:Name``.

  Raises:
    ValueError: naming ``field``, when the module does not import or lacks the name.
  """
  module_name, _, attr = path.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"{field}: cannot import {module_name!r} ({e})") from e
  if not attr or not hasattr(module, attr):
    raise ValueError(f"{field}: {module_name!r} has no {attr!r}")
  return getattr(module, attr)


def names(value: Any, field: str) -> list[str]:
  """The names in a config field: a comma-separated string such as
  ``"jsonl,mypkg.tb:Writer"`` (what ``--config.train.writers=...`` gives), or a tuple.

  Raises:
    ValueError: naming ``field``, for anything but a string or a tuple of strings.
  """
  if isinstance(value, str):
    value = (value,)
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
    raise ValueError(f"{field}: expected a tuple of names, got {value!r}")
  return [name.strip() for entry in value for name in entry.split(",") if name.strip()]


class Registry:
  """Factories by name for one config field, with import paths as the fallback.

  Args:
    field: the config field it serves, for error messages (``config.train.hooks``).
    what: what a name stands for (``hook``, ``writer``).
    factories: the built-in entries.
  """

  def __init__(self, field: str, what: str, factories: dict[str, Any] | None = None):
    self.field, self.what = field, what
    self.factories: dict[str, Any] = dict(factories or {})

  def register(self, name: str, factory: Any) -> None:
    self.factories[name] = factory

  def factory(self, name: str) -> Any:
    """The registered factory, or the object an import path names.

    Raises:
      ValueError: an unknown name or a path that does not load.
    """
    if name in self.factories:
      return self.factories[name]
    if ":" in name:
      return load(name, self.field)
    raise ValueError(f"{self.field}: unknown {self.what} {name!r}; registered: "
                     f"{tuple(self.factories)}, or an import path package.module:Name")

  def check(self, value: Any) -> None:
    """Raises ``ValueError`` unless every name in ``value`` resolves."""
    for name in names(value, self.field):
      self.factory(name)

  def create(self, value: Any, arg: Any) -> list[Any]:
    """Each named factory called with ``arg``."""
    return [self.factory(name)(arg) for name in names(value, self.field)]
