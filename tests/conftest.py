"""Shared test set-up: JAX on the CPU, quiet logs, a persistent compilation cache.

XLA:CPU compiles take seconds; the cache (a directory of compiled executables,
same programs, same results) keeps the suite fast on 2 cores. Subprocesses started
by the tests inherit it: the launchers through ``CERTVAE_JAX_COMPILATION_CACHE``, plain
scripts (the examples) through JAX's own ``JAX_COMPILATION_CACHE_DIR``.
"""

import os
import shutil

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CERTVAE_JAX_COMPILATION_CACHE", os.path.join(
    os.path.expanduser("~"), ".cache", "certvae_jax", "xla-tests"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["CERTVAE_JAX_COMPILATION_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# With several xdist workers sharing the cores, one BLAS / OpenMP thread each. On the
# tests' small matrices OpenBLAS's threads cost more than they give (six scikit-learn
# logistic regressions on digits' pixels: 11 s with 2 threads, 0.7 s with 1, on 2 cores),
# and the two workers' threads share the same two cores (suite 6:06-6:20 -> 5:19-5:34).
# Set before NumPy loads (OpenBLAS reads them once); the tests' subprocesses inherit them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402  (after the environment above)

jax.config.update("jax_compilation_cache_dir", os.environ["CERTVAE_JAX_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import pytest  # noqa: E402

from configs import digits  # noqa: E402


def tiny_config(**train_overrides):
  """The digits smoke config, shortened further for tests."""
  c = digits.get_config("smoke")
  c.warmup.steps = 40
  c.train.steps = 40
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.eval.every = 20
  c.train.progress = False
  for key, value in train_overrides.items():
    c.train[key] = value
  return c


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory):
  """A workdir whose warm-up and teacher are done (copy it into each test's workdir)."""
  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  wd = str(tmp_path_factory.mktemp("seed"))
  train.Runner(tiny_config(), wd).ensure_teacher()
  return wd


def copy_seed(seed_dir, dest):
  """A copy of ``seed_dir`` (without its lock) at ``dest``; returns ``dest``."""
  shutil.copytree(seed_dir, dest, ignore=shutil.ignore_patterns(".lock"))
  return dest


@pytest.fixture
def config():
  return tiny_config()


# The files that take longest (seconds of test time on 2 cores, `pytest --durations=0`),
# run first: with one file per worker at a time (`--dist loadfile`), starting the long
# ones early keeps one long file from running alone at the end. Order only; nothing skips.
LONGEST_FIRST = ("test_launchers.py", "test_mode_matrix.py", "test_multihost.py",
                 "test_reliability.py", "test_faults.py", "test_train.py", "test_extending.py",
                 "test_steps_per_call.py", "test_baselines.py", "test_protocol.py",
                 "test_guard.py", "test_used_head.py", "test_bounds.py",
                 "test_examples.py")


@pytest.hookimpl(trylast=True)  # after pytest groups the items by parametrized fixtures
def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
