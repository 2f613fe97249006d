"""A user's teacher given by its rows (``teacher.kind='npz:PATH'``)."""

import numpy as np
import pytest

from certvae_jax import certificate, data, train
from certvae_jax.training.checkpoint import IncompatibleCheckpoint
from tests.conftest import tiny_config


def _rows(n: int, k: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).dirichlet(np.full(k, 0.2), size=n).astype(np.float32)


@pytest.fixture(scope="module")
def digits_split():
  d = data.load_dataset("digits")
  return len(d.x_train), len(d.x_test)


def test_run_with_saved_rows_certifies_against_those_rows(tmp_path, digits_split):
  n_train, n_test = digits_split
  train_rows, test_rows = _rows(n_train, 6, 0), _rows(n_test, 6, 1)
  path = tmp_path / "teacher.npz"
  np.savez(path, train=train_rows, test=test_rows)
  c = tiny_config()
  c.teacher.kind = f"npz:{path}"
  s = train.train(c, "full", str(tmp_path / "run"), target="fixed")
  assert s["test"]["teacher_mi"] == pytest.approx(float(certificate.teacher_mi(test_rows)),
                                                  abs=1e-5)
  assert s["train"]["teacher_mi"] == pytest.approx(float(certificate.teacher_mi(train_rows)),
                                                   abs=1e-5)
  assert "recon_alignment" not in s["test"]  # no T of an arbitrary input
  # Edited rows under the same path are another teacher: the workdir refuses them.
  np.savez(path, train=_rows(n_train, 6, 2), test=test_rows)
  with pytest.raises(IncompatibleCheckpoint, match="rows_digest"):
    train.train(c, "full", str(tmp_path / "run"), target="fixed")


@pytest.mark.parametrize("arrays, match", [
    ({"train": "ok"}, "no array 'test'"),
    ({"train": "ok", "test": "short"}, "must have shape"),
    ({"train": "ok", "test": "bad"}, "sum to 1"),
])
def test_bad_rows_are_refused_before_training(tmp_path, digits_split, arrays, match):
  n_train, n_test = digits_split
  made = {"ok": lambda n: _rows(n, 4, 0), "short": lambda n: _rows(n - 1, 4, 0),
          "bad": lambda n: np.full((n, 4), 0.3, np.float32)}
  sizes = {"train": n_train, "test": n_test}
  path = tmp_path / "t.npz"
  np.savez(path, **{name: made[kind](sizes[name]) for name, kind in arrays.items()})
  c = tiny_config()
  c.teacher.kind = f"npz:{path}"
  with pytest.raises(ValueError, match=match):
    train.make_context(c)


def test_missing_file_and_bad_kind_are_refused(tmp_path):
  c = tiny_config()
  c.teacher.kind = f"npz:{tmp_path / 'missing.npz'}"
  with pytest.raises(ValueError, match="no such file"):
    train.make_context(c)
  c.teacher.kind = "npz:"
  with pytest.raises(ValueError, match="config.teacher.kind"):
    train.make_context(c)
