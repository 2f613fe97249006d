"""Reproducibility: with the pinned versions, the smoke run gives the committed numbers."""

import importlib.metadata
import json
import os

import pytest

from certvae_jax import train
from certvae_jax.configs import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packages whose versions decide the numbers (scikit-learn's GMM, XLA's kernels).
DECIDING = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "scikit-learn")


def _pinned() -> dict[str, str]:
  with open(os.path.join(ROOT, "requirements", "pinned.txt")) as fh:
    pairs = [line.strip().split("==") for line in fh if "==" in line and not line.startswith("#")]
  return {name.lower(): version for name, version in pairs}


def _unpinned() -> list[str]:
  pinned = _pinned()
  return [f"{name} {importlib.metadata.version(name)} (pinned {pinned[name]})"
          for name in DECIDING if importlib.metadata.version(name) != pinned[name]]


def test_pinned_file_names_every_deciding_package():
  assert set(DECIDING) <= set(_pinned())


@pytest.mark.skipif(bool(_unpinned()), reason="not the pinned environment: "
                    + ", ".join(_unpinned()))
def test_default_smoke_run_matches_the_committed_numbers(tmp_path):
  """Same versions, same numbers; 1e-4 allows for another CPU's float32 rounding."""
  with open(os.path.join(ROOT, "tests", "expected", "digits_smoke_full.json")) as fh:
    expected = json.load(fh)
  config = digits.get_config("smoke")
  config.train.progress = False
  summary = train.train(config, "full", str(tmp_path))
  for split in ("train", "test"):
    for key, value in expected[split].items():
      assert summary[split][key] == pytest.approx(value, abs=1e-4), (split, key)
