"""User code named in a config: ``package.module:Name`` import paths, and name lists.

One registry type (:class:`Registry`) serves objectives, modes, model parts, hooks and
metric writers; each takes a registered name or an import path, so that a user's part plugs in from the command line without
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
  """Entries by name, with import paths as the fallback: the one registry type of the
  package (objectives, modes, model parts, loop hooks, metric writers).

  Args:
    field: what names an entry, for error messages (``config.train.hooks``, ``mode``).
    what: what an entry is (``hook``, ``writer``), or ``""``.
    entries: the built-in entries.
    hint: appended to the unknown-name message.
  """

  _instances: list[Registry] = []

  def __init__(self, field: str, what: str = "", entries: dict[str, Any] | None = None,
               hint: str = ""):
    self.field, self.what, self.hint = field, what, hint
    self.entries: dict[str, Any] = dict(entries or {})
    Registry._instances.append(self)

  def register(self, name: str, entry: Any) -> Any:
    """Adds (or replaces) ``name``; returns ``entry``."""
    self.entries[name] = entry
    return entry

  def names(self) -> tuple[str, ...]:
    return tuple(self.entries)

  def get(self, name: str) -> Any:
    """The entry registered as ``name``, or the object an import path names.

    Raises:
      ValueError: an unknown name or a path that does not load.
    """
    if name in self.entries:
      return self.entries[name]
    if ":" in name:
      return load(name, self.field)
    what = f"{self.what} " if self.what else ""
    raise ValueError(f"{self.field}: unknown {what}{name!r}; registered: {self.names()}, or an "
                     f"import path package.module:Name{self.hint}")

  factory = get  # hooks and writers call their entries factories

  def check(self, value: Any) -> None:
    """Raises ``ValueError`` unless every name in ``value`` resolves."""
    for name in names(value, self.field):
      self.get(name)

  def create(self, value: Any, arg: Any) -> list[Any]:
    """Each named factory called with ``arg``."""
    return [self.get(name)(arg) for name in names(value, self.field)]


def snapshot() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
  """``(key, held)``: every registry's names and entry ids as they are now, and the
  entries themselves. Equal keys mean every name resolves to the same object, as long
  as ``held`` is kept (so that no id is reused)."""
  key = tuple((r.field, tuple((n, id(e)) for n, e in r.entries.items()))
              for r in Registry._instances)
  return key, tuple(e for r in Registry._instances for e in r.entries.values())


REGISTRATIONS_HINT = (" (built-ins defined outside their registry's module register when "
                      "certvae_jax.registrations is imported)")
