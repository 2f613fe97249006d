"""Shared command-line plumbing for ``launch/*.py`` (absl flags + ml_collections configs).

Bad input exits with code 2 and a one-line ``error: ...`` message; a diverged run
exits with code 1. Everything a script does is one library call with the same names.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "digits.py")


def define_common_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file, e.g. "
                                  "configs/digits.py or configs/digits.py:smoke.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory; default runs/<config name>[/seed<seed>].")
  flags.DEFINE_integer("seed", None, "Overrides config.seed.")
  flags.DEFINE_enum("target", "live", ["live", "fixed"],
                    "Teacher targets: the live frozen teacher or the cached T_fix.")
  flags.DEFINE_bool("overwrite", False, "Clear a workdir made with another config, teacher "
                    "or dataset instead of refusing to run in it.")


def enable_compilation_cache() -> None:
  """Turns on JAX's persistent compilation cache (XLA:CPU compiles take seconds).

  ``CERTVAE_JAX_COMPILATION_CACHE`` names the directory (default
  ``~/.cache/certvae_jax/xla``); set it empty to disable. Cached executables are the
  same programs, so results are unchanged.
  """
  import jax  # pylint: disable=import-outside-toplevel
  path = os.environ.get("CERTVAE_JAX_COMPILATION_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "certvae_jax", "xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def parse(argv: list[str]) -> flags.FlagValues:
  """Parses flags; a malformed flag or config override exits 2 with one line."""
  try:
    flags.FLAGS(argv)
  except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
    fail(f"{e}".splitlines()[0] if str(e) else type(e).__name__)
  return flags.FLAGS


def fail(message: str, code: int = 2) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def run_name(f: flags.FlagValues) -> str:
  """Default run directory name: the config's name, its argument and a user data file.

  ``configs/digits.py`` -> ``digits``; ``configs/digits.py:smoke`` -> ``digits_smoke``;
  with ``--config.data.source=npz:/a/faces.npz`` -> ``digits_faces``. Runs of different
  configs therefore never share a default workdir.
  """
  spec = config_flags.get_config_filename(f["config"])
  path, _, arg = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += "_" + arg
  source = f.config.data.source
  if source.startswith("npz:"):
    name += "_" + os.path.splitext(os.path.basename(source[4:]))[0]
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run"


def run_guarded(fn: Callable[[], int | None]) -> None:
  """Runs ``fn``; ValueError -> exit 2, a diverged run -> exit 1, one line each."""
  from certvae_jax.train import TrainingDiverged  # pylint: disable=import-outside-toplevel
  try:
    code = fn()
  except ValueError as e:
    fail(str(e).splitlines()[0] if str(e) else "invalid input")
  except TrainingDiverged as e:
    fail(str(e), code=1)
  sys.exit(code or 0)
