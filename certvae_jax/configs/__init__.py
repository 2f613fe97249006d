"""The shipped run configs (``get_config(arg)`` returning an ``ml_collections.ConfigDict``).

They live in the package so that an installed ``certvae_jax`` (``pip install .``, not
only ``-e``) finds them from any directory: ``--config=digits`` or
``--config=digits:smoke`` on the command line resolves to the file here (see
:func:`resolve_config_path`). The repository's top-level
``configs/`` holds thin files that re-export these, for the paths in the papers'
commands.
"""

from __future__ import annotations

import os

import ml_collections

NAMES = ("digits", "digits_simplex", "cifar10", "cifar10_simplex", "cifar100", "cifar100_simplex",
         "tiny_imagenet")
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def is_smoke(arg: str | None, allowed: tuple[str, ...] = ("smoke",)) -> bool:
  """Parses a config argument: ``'smoke'`` for the seconds-long CPU run, another of
  ``allowed`` (the image configs also take ``'cpu'``), or nothing.

  Raises:
    ValueError: any other argument.
  """
  if arg in (None, ""):
    return False
  if arg in allowed:
    return arg == "smoke"
  *others, last = ["nothing", *(repr(a) for a in allowed)]
  raise ValueError(f"config: unknown argument {arg!r}; expected {', '.join(others)} or {last}")


def resolve_config_path(spec: str) -> str:
  """``--config`` value -> a config file path (the ``:arg`` suffix kept).

  A bare shipped name (``digits``, ``digits:smoke``, ``cifar100``, ...) resolves to the
  file inside the installed package; anything else is a path, returned unchanged.
  """
  name, sep, arg = spec.partition(":")
  if name in NAMES and not os.path.exists(name):
    return os.path.join(DIRECTORY, name + ".py") + sep + arg
  return spec


def get_config(spec: str = "digits") -> ml_collections.ConfigDict:
  """A shipped config by name, with its argument after a colon, as ``--config`` takes it:
  ``get_config("digits:smoke")``, ``get_config("cifar100")``.

  Raises:
    ValueError: an unknown name or argument.
  """
  # The config modules import this package's helpers: import them once it is loaded.
  import importlib  # pylint: disable=import-outside-toplevel
  name, _, arg = str(spec).partition(":")
  if name not in NAMES:
    raise ValueError(f"config: unknown shipped config {name!r}; expected one of {NAMES}")
  # A config file of this package, by its name in NAMES (not a plug-in registration).
  return importlib.import_module(f"certvae_jax.configs.{name}").get_config(arg or None)
