"""Shared command-line plumbing for ``launch/*.py`` (absl flags + ml_collections configs).

Bad input exits with code 2 and a one-line ``error: ...`` message; a diverged run
exits with code 1. Everything a script does is one library call with the same names.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
import traceback
from typing import Callable

import ml_collections
from absl import flags
from ml_collections import config_flags

from certvae_jax import configs, host_memory
from certvae_jax.configs import resolve_config_path

# Inside the package, so that an installed certvae_jax runs from any directory.
DEFAULT_CONFIG = os.path.join(configs.DIRECTORY, "digits.py")


# ml_collections parses the default config, with the overrides in sys.argv, when the flag
# is defined (at import); a mistyped override raises there. It is kept for parse() to
# report as one line, after --help has had its chance.
_DEFINE_ERROR: list[BaseException] = []

HELP_FLAGS = ("--help", "-h", "-help", "--helpshort", "-?")
CONFIG_DOC = ("Config fields: every field, with its meaning, is in certvae_jax/configs/digits.py "
              "(the default); override any as --config.<section>.<field>=<value>, e.g. "
              "--config.train.steps=4000, after --config=... when both are given.")


def define_common_flags() -> None:
  try:
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file, e.g. "
                                    "configs/digits.py or configs/digits.py:smoke, or a "
                                    f"shipped config by name: {', '.join(configs.NAMES)} "
                                    "(:smoke).", lock_config=True)
  except Exception as e:  # pylint: disable=broad-except  # reported by parse()
    _DEFINE_ERROR.append(e)
  flags.DEFINE_string("workdir", None, "Run directory; default runs/<config name>[-<data "
                      "name>]/seed<seed> (launch/protocol.py: without /seed<seed>).")
  flags.DEFINE_integer("seed", None, "Overrides config.seed.")
  flags.DEFINE_enum("target", None, ["live", "fixed"],
                    "Teacher targets: the live frozen teacher or the cached T_fix "
                    "(default: config.protocol.target).")
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
  flags.DEFINE_bool("distributed", False, "Multi-host with JAX's cluster auto-detection "
                    "(TPU pods, SLURM, ...); implied by --coordinator_address.")
  flags.DEFINE_bool("overwrite", False, "Clear a workdir made with another config, teacher "
                    "or dataset instead of refusing to run in it.")


def maybe_initialize_distributed(f: flags.FlagValues) -> None:
  """``jax.distributed.initialize`` when asked, before anything touches a device."""
  if f.distributed or f.coordinator_address or f.num_processes or f.process_id is not None:
    from certvae_jax import distributed  # pylint: disable=import-outside-toplevel
    try:
      distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    except ValueError as e:
      fail(str(e))


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
    # Every executable, however quick to compile: a run makes about a hundred small ones
    # (evaluation, diagnostics, the guard) whose compiles add up to seconds per launch.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def parse(argv: list[str], doc: str = "") -> flags.FlagValues:
  """Parses flags and loads the config.

  ``--help`` (``-h``) and ``--helpfull`` print help and exit 0; anything malformed
  exits 2 with one ``error:`` line.
  """
  argv = [_resolve_config_flag(a) for a in argv]
  _print_help_and_exit(argv, doc)
  if _DEFINE_ERROR:
    fail(_readable(_DEFINE_ERROR[0], argv))
  try:
    flags.FLAGS(argv)
    config = flags.FLAGS.config
  except Exception as e:  # pylint: disable=broad-except  # a config file can raise anything
    fail(_readable(e, argv))
  if not isinstance(config, ml_collections.ConfigDict):
    # ml_collections keeps a load failure in a placeholder that raises when used.
    try:
      config["seed"]
    except Exception as e:  # pylint: disable=broad-except
      lines = [l.strip() for l in str(e).splitlines() if l.strip()]
      fail(f"--config: cannot load {config_flags.get_config_filename(flags.FLAGS['config'])}: "
           f"{lines[-1] if lines else type(e).__name__}")
  return flags.FLAGS


def _print_help_and_exit(argv: list[str], doc: str) -> None:
  args = argv[1:]
  if not any(a in HELP_FLAGS or a == "--helpfull" for a in args):
    return
  if "--helpfull" in args:
    text = flags.FLAGS.get_help()
  else:
    text = "\n".join(flags.FLAGS.module_help(m) for m in (sys.argv[0], __name__)
                      if flags.FLAGS.module_help(m).strip())
  print(f"{doc.strip()}\n\nflags (--helpfull for every flag):\n{text}\n\n{CONFIG_DOC}")
  sys.exit(0)


_DID_YOU_MEAN = re.compile(r"'([^']+)'(?:.*Did you mean \"([^\"]+)\")?", re.S)


def _readable(e: BaseException, argv: list[str]) -> str:
  """One line for a parse failure; a mistyped config field names the flag and the
  closest field ("did you mean train.steps?")."""
  chain, cur = [], e
  while cur is not None:
    chain.append(cur)
    cur = cur.__cause__ or cur.__context__
  for err in chain:
    if not isinstance(err, (KeyError, AttributeError)):
      continue
    found = _DID_YOU_MEAN.search(str(err).replace("\\n", "\n").replace("\\'", "'"))
    flag = found and next((a.split("=", 1)[0] for a in argv if a.startswith("--config.")
                           and a.split("=", 1)[0].endswith(f".{found.group(1)}")), None)
    if flag:
      key, guess = found.groups()
      section = flag[len("--config."):].rsplit(".", 1)[0] if flag.count(".") > 1 else ""
      where = f"{section}." if section else ""
      hint = f"; did you mean {where}{guess}?" if guess else ""
      return f"{flag}: no config field {where}{key}{hint}"
  return _first_line(e)


def _resolve_config_flag(arg: str) -> str:
  """``--config=digits:smoke`` -> the shipped file's path; other arguments unchanged."""
  if arg.startswith("--config="):
    return "--config=" + resolve_config_path(arg[len("--config="):])
  return arg


def _first_line(e: BaseException) -> str:
  """The most specific one-line message of an exception chain."""
  while e.__cause__ is not None and not str(e).strip():
    e = e.__cause__
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  if not lines:
    return type(e).__name__
  # "Error whilst parsing config file:" and the like: the cause is on the last line.
  return f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def setup(argv: list[str], doc: str = "") -> tuple[flags.FlagValues, str]:
  """A launch script's prologue: flags and config (``doc`` is the ``--help`` text), the host
  allocator setting (:mod:`certvae_jax.host_memory`), the distributed runtime (before any
  device is touched), the compilation cache; returns the flags and the target."""
  f = parse(argv, doc)
  try:  # before any JAX thread allocates (each keeps its first malloc arena)
    host_memory.retain_from_env()
  except ValueError as e:
    fail(str(e))
  maybe_initialize_distributed(f)
  setup_logging()
  enable_compilation_cache()
  return f, f.target or f.config.protocol.target


def setup_logging() -> None:
  """The library's progress messages (``certvae_jax`` loggers) to stderr, process 0 only."""
  import jax  # pylint: disable=import-outside-toplevel
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  package = logging.getLogger("certvae_jax")
  package.addHandler(handler)
  package.setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  package.propagate = False  # absl's root handler would print them a second time


def fail(message: str, code: int = 2) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def run_name(f: flags.FlagValues) -> str:
  """Default run directory name: the config's name and argument, and the data's name
  when the config's own name does not already say it.

  ``configs/digits.py`` -> ``digits``; ``configs/digits.py:smoke`` -> ``digits_smoke``;
  with ``--config.data.source=npz:/a/faces.npz`` -> ``digits-faces``; ``cifar100`` on
  ``tfds:cifar100`` -> ``cifar100``. Runs of different configs or data therefore never
  share a default workdir.
  """
  spec = config_flags.get_config_filename(f["config"])
  path, _, arg = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += "_" + arg
  data = data_name(f.config.data.source)
  if data not in name:
    name += "-" + data
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run"


def data_name(source: str) -> str:
  """A short name for a data source: ``digits``, ``faces`` (``npz:/a/faces.npz``),
  ``cifar100`` (``tfds:cifar100``)."""
  kind, _, rest = source.partition(":")
  if kind == "npz":
    return os.path.splitext(os.path.basename(rest))[0] or "npz"
  if kind == "tfds":
    return rest.split("/")[0].split(":")[0] or "tfds"
  return source


def run_guarded(fn: Callable[[], int | None]) -> None:
  """Runs ``fn``; ValueError -> exit 2, a diverged run -> exit 1, one line each; a bug
  inside a phase -> its traceback, then one line saying where the run was left, exit 1.
  A filesystem error (disk full, read-only, a damaged path) -> exit 2, one line
  (:func:`disk_fault`). SIGTERM or SIGINT while a phase trains saves it and exits 143 or
  130 with one line (:mod:`certvae_jax.training.preemption`); either signal elsewhere exits
  the same way with one line. The signal handlers in place before are restored after."""
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt, below
  signal.signal(signal.SIGTERM, _raise_terminated)
  try:
    _run_reporting(fn)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _run_reporting(fn: Callable[[], int | None]) -> None:
  """:func:`run_guarded`'s body: ``fn``, and one line with an exit code for each way out."""
  # pylint: disable-next=import-outside-toplevel
  from certvae_jax.training.loop import PhaseFailed, TrainingDiverged
  from certvae_jax.training.preemption import Preempted  # pylint: disable=import-outside-toplevel
  try:
    code = fn()
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except (KeyboardInterrupt, Terminated) as e:
    name, code = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else ("SIGTERM", 143)
    fail(f"stopped by {name} outside training (a phase saves the step it reached); finished "
         "phases and checkpoints are kept; rerun the same command to resume", code=code)
  except ValueError as e:
    fail(_first_line(e))
  except OSError as e:
    fail(disk_fault(e))
  except TrainingDiverged as e:
    fail(str(e), code=1)
  except PhaseFailed as e:
    traceback.print_exception(e.__cause__ or e)  # a bug report: keep it whole
    fail(str(e), code=1)
  sys.exit(code or 0)


class Terminated(BaseException):
  """SIGTERM outside a training phase (inside one, the phase saves and stops itself)."""


def _raise_terminated(signum: int, frame) -> None:
  del signum, frame
  raise Terminated()


def disk_fault(e: OSError) -> str:
  """One line for a filesystem error: the file, what went wrong, what to do. Run files
  are written atomically and checkpoints are committed by a rename, so the last good
  ones are intact whatever the fault."""
  where = e.filename or "a run file"
  if e.errno == errno.ENOSPC:
    return (f"no space left on the device writing {where}; free space and rerun the same "
            "command (finished phases and the last good checkpoint are kept)")
  if e.errno == errno.EROFS:
    return f"{where}: read-only file system; choose a writable --workdir"
  if e.errno in (errno.EACCES, errno.EPERM):
    return f"{where}: permission denied; choose a writable --workdir"
  if e.errno in (errno.ENOTDIR, errno.EEXIST):
    return (f"{where}: a file stands where a directory is expected; choose another "
            "--workdir or move the file")
  if e.errno == errno.ENOENT:
    return f"{where}: no such file or directory"
  return f"{where}: {e.strerror or e}"
