"""The pure parts of ``benchmarks/scale.py`` (its data set and its growth exponents) and of
``benchmarks/gpu_check.py`` (its projection and page), and ``benchmarks/eval_batch.py`` on
the smoke model. The benchmarks themselves run by hand (figures in docs/speed.md);
``.ci/run`` runs ``gpu_check.py --smoke``."""

import importlib.metadata
import importlib.util
import math
import os

import numpy as np
import pytest

from certvae_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def scale():
  return _script("scale")


def test_the_synthetic_cifar_data_is_what_the_library_reads(scale, tmp_path):
  path = str(tmp_path / "c.npz")
  scale.synthetic_cifar(path, 50, 7)
  saved = np.load(path)
  assert saved["x"].shape == (50, 32, 32, 3) and saved["x"].dtype == np.uint8
  assert saved["x_test"].shape == (10, 32, 32, 3)
  assert set(saved["y"]) <= set(range(7)) and set(saved["y_test"]) <= set(range(7))
  d = data.load_dataset(f"npz:{path}")
  assert d.example_shape == (32, 32, 3) and d.x_train.shape[0] == 50
  # Rows of one class are nearer to each other than to another class's rows.
  x, y = saved["x"].reshape(50, -1).astype(float), saved["y"]
  a, b = np.flatnonzero(y == y[0])[:2], np.flatnonzero(y != y[0])[0]
  assert len(a) == 2 and np.linalg.norm(x[a[0]] - x[a[1]]) < np.linalg.norm(x[a[0]] - x[b])


def test_growth_exponents_are_the_log_ratios_between_the_two_largest_sizes(scale):
  rows = [{"n": n, "k": 10, "phase": "full", "part": part, "seconds": s(n), "peak_rss_mb": 1.0}
          for n in (1000, 2000, 8000)
          for part, s in (("linear", lambda n: 0.001 * n), ("quadratic", lambda n: 1e-6 * n * n),
                          ("tiny", lambda n: 0.01))]
  found = {part: e for _, _, part, e in scale.growth(rows)}
  assert found["linear"] == pytest.approx(1.0) and found["quadratic"] == pytest.approx(2.0)
  assert "tiny" not in found  # under 0.05 s: noise, not growth
  table = scale.markdown(rows, "test machine")
  assert "| full | quadratic | 1.00 | 4.00 | 64.00 |" in table
  assert f"| 10 | full | quadratic | {2.0:.2f} |" in table
  assert not math.isnan(found["linear"])


def test_the_benchmark_runs_the_configs_own_steps_or_the_ones_it_is_given(scale):
  real = scale.scaled_config("x.npz", 100, steps=0)
  assert (real.warmup.steps, real.train.steps, real.eval.every) == (5000, 20000, 20000)
  assert real.data.source == "npz:x.npz" and real.teacher.components == (100,)
  cut = scale.scaled_config("x.npz", 10, steps=50)
  assert (cut.warmup.steps, cut.train.steps, cut.train.checkpoint_every, cut.eval.every) == (
      50, 50, 50, 50)
  assert scale.scaled_config("x.npz", 10, steps=0, eval_every=2000).eval.every == 2000
  assert real.eval.batch_size == 1024
  assert scale.scaled_config("x.npz", 10, steps=50, eval_batch_size=32).eval.batch_size == 32
  assert real.eval.reconstruction_check_rows == 10000
  for rows in (0, 2000):
    assert scale.scaled_config("x.npz", 10, steps=50, reconstruction_rows=rows).eval[
        "reconstruction_check_rows"] == rows
  # On a CPU (run_one's "auto"): cifar100:cpu's evaluation settings, flags still override.
  cpu = scale.scaled_config("x.npz", 10, steps=50, cpu=True)
  assert (cpu.eval.batch_size, cpu.eval.reconstruction_check_rows) == (32, 2000)
  assert scale.scaled_config("x.npz", 10, steps=50, eval_batch_size=64,
                             cpu=True).eval.batch_size == 64


@pytest.mark.parametrize("sizes, rows, message", [
    ([0, 32], 64, "--sizes: expected positive batch sizes"),
    ([32, 64], 48, "--rows: 48 rows cannot fill one batch of 64")])
def test_the_evaluation_batch_benchmark_refuses_bad_sizes(sizes, rows, message):
  with pytest.raises(ValueError, match=message):
    _script("eval_batch").check(sizes, rows)


def test_the_evaluation_batch_benchmark_times_every_part():
  found = _script("eval_batch").rates("cifar100:smoke", [8], rows=24)
  assert sorted(found) == [8] and sorted(found[8]) == ["full", "latents", "reconstruct"]
  assert all(math.isfinite(r) and r > 0 for r in found[8].values()), found


def _protocol_rows(evaluations_each=2.0):
  """One seed's rows as ``scale.run_one`` gives them: every phase evaluated once."""
  rows = []
  for phase, steps, wall in (("warmup", 5000, 20.0), ("teacher", 0, 30.0), ("full", 20000, 60.0),
                             ("noalign", 20000, 50.0), ("rescue", 20000, 70.0)):
    base = {"n": 50000, "k": 100, "phase": phase, "steps": steps, "peak_rss_mb": 1.0}
    rows.append(dict(base, part="phase wall", seconds=wall))
    if steps:
      rows.append(dict(base, part="training steps", seconds=wall - 5, steps_per_s=steps / 10,
                       examples_per_s=steps * 12.8, peak_device_mb=None if phase == "warmup"
                       else 512.0))
      rows.append(dict(base, part="evaluation, both splits (all parts)",
                       seconds=evaluations_each, calls=1))
  return rows


def test_the_gpu_check_projects_the_protocol_at_the_configs_evaluation_rate():
  check = _script("gpu_check")
  rows = _protocol_rows()
  once = 20 + 30 + 60 + 50 + 70
  # Every 2000 steps: 3 evaluations in the warm-up, 10 in each training phase (2 s each).
  assert check.projection(rows, 2000, seeds=1) == pytest.approx(once + 2 * (2 + 3 * 9))
  assert check.projection(rows, 20000, seeds=3) == pytest.approx(3 * once)
  text = check.page("Test GPU", "gpu", "3 passed in 1.0s", "machine: test\n| table |\n(a note)",
                    rows, 2000, "python benchmarks/gpu_check.py", 100.0)
  assert "| full | 20000 | 60.0 | 55.0 | 2.0 | 2000.0 | 256000 | 512 |" in text
  assert "| warmup | 5000 | 20.0 | 15.0 | 2.0 | 500.0 | 64000 | - |" in text
  assert "| teacher | 0 | 30.0 | - | - | - | - | - |" in text
  assert "machine: test\n\n| table |\n\n(a note)" in text  # the table is a block of its own
  hours = (once + 2 * (2 + 3 * 9)) * 3 / 3600
  assert f"**{hours:.2f} h**" in text and "3 passed in 1.0s" in text
  assert f"jax {importlib.metadata.version('jax')}" in text  # the versions behind the numbers
