"""The pure parts of ``benchmarks/scale.py``: its data set and its growth exponents (the
benchmark itself runs by hand; its figures are in docs/speed.md)."""

import importlib.util
import math
import os

import numpy as np
import pytest

from certvae_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def scale():
  spec = importlib.util.spec_from_file_location("scale", os.path.join(ROOT, "benchmarks",
                                                                      "scale.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
