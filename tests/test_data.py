"""Data sources and step-indexed batching."""

import numpy as np
import pytest

from certvae_jax import data


def test_digits_is_embedded_scaled_and_split_deterministically():
  a = data.load_dataset("digits")
  b = data.load_dataset("digits")
  assert a.x_train.shape == (1438, 64) and a.x_test.shape == (359, 64)
  assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
  assert a.num_classes == 10 and a.example_shape == (8, 8)
  np.testing.assert_array_equal(a.x_train, b.x_train)


def test_npz_source_with_and_without_test_split(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(50, 4, 4), dtype=np.uint8)
  p = tmp_path / "d.npz"
  np.savez(p, x=x, y=np.arange(50) % 3)
  d = data.load_dataset(f"npz:{p}", test_fraction=0.2)
  assert d.x_train.shape == (40, 16) and d.x_test.shape == (10, 16)
  assert d.x_train.dtype == np.uint8 and d.num_classes == 3  # scaled per batch
  unit = data.to_unit(d.x_train)
  assert unit.dtype == np.float32 and unit.max() <= 1.0
  np.savez(p, x=x.astype(np.float32) / 255, x_test=x[:5].astype(np.float32) / 255)
  d = data.load_dataset(f"npz:{p}")
  assert len(d.x_train) == 50 and len(d.x_test) == 5 and d.y_train is None


def test_every_loader_aligns_its_splits_so_a_cpu_device_shares_them(tmp_path):
  """The device-resident training split costs no second copy on a CPU: the loaders
  allocate on :data:`data.ALIGNMENT` and the engine places the split in place."""
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, size=(30, 4, 4, 3), dtype=np.uint8)
  p = tmp_path / "d.npz"
  np.savez(p, x=x, x_test=x[:7])
  sets = [data.load_dataset("digits"), data.load_dataset(f"npz:{p}")]
  np.savez(p, x=x)  # split by the loader
  sets.append(data.load_dataset(f"npz:{p}"))
  np.savez(p, x=x.astype(np.float64) / 255)  # float inputs, cast to float32
  sets.append(data.load_dataset(f"npz:{p}"))
  for d in sets:
    for split in (d.x_train, d.x_test):
      assert split.ctypes.data % data.ALIGNMENT == 0 and split.flags.c_contiguous
  np.testing.assert_array_equal(sets[1].x_train, x.reshape(30, -1))
  np.testing.assert_array_equal(sets[3].x_train, (x.astype(np.float64) / 255).astype(
      np.float32).reshape(30, -1)[np.sort(np.random.default_rng(0).permutation(30)[6:])])
  rows = np.array([3, 0, 7])
  np.testing.assert_array_equal(data.aligned(sets[1].x_train, rows), sets[1].x_train[rows])
  assert data.aligned(sets[1].x_train) is sets[1].x_train
  from certvae_jax.training import engine  # pylint: disable=import-outside-toplevel
  from configs import digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config("smoke")
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))  # as the run's context
  for d in sets:
    on_device = engine.Engine(config, d, mesh).resident(d.x_train)
    assert on_device.unsafe_buffer_pointer() == d.x_train.ctypes.data


ZEROS = np.zeros((10, 3), np.float32)


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.full((10, 3), np.nan, np.float32)}, "x: example 0 has NaN"),
    ({"x": np.zeros(10, np.float32)}, "x: expected shape"),
    ({"x": np.full((10, 3), 2.0, np.float32)}, r"x: float inputs must lie in \[0, 1\]"),
    ({"x": np.zeros((10, 3), np.int64)}, "x: expected uint8 or float"),
    ({"x": ZEROS, "y": np.zeros(9, np.int64)}, r"y: expected shape \(10,\)"),
    ({"x": ZEROS, "y": np.zeros(10, np.float32)}, "y: expected integer"),
    ({"y": np.zeros(10, np.int64)}, "missing array 'x'"),
    ({"x": ZEROS, "x_test": np.zeros((4, 5), np.float32)}, "x_test: examples of shape"),
    ({"x": np.zeros((2, 0), np.uint8)}, "x: examples have no features"),  # found by test_fuzz
    ({"x": np.zeros((10, 3, 0), np.float32)}, "x: examples have no features"),
])
def test_npz_bad_arrays_raise_clear_errors(tmp_path, arrays, match):
  p = tmp_path / "bad.npz"
  np.savez(p, **arrays)
  with pytest.raises(ValueError, match=match):
    data.load_dataset(f"npz:{p}")


def test_unknown_and_missing_sources(tmp_path):
  with pytest.raises(ValueError, match="unknown source 'mnist'"):
    data.load_dataset("mnist")
  with pytest.raises(ValueError, match="no such file"):
    data.load_dataset(f"npz:{tmp_path}/nope.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="cannot read"):
    data.load_dataset(f"npz:{tmp_path}/junk.npz")
  with pytest.raises(ValueError, match="test_fraction"):
    data.load_dataset("digits", test_fraction=1.5)


def test_batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch():
  n, b = 103, 10
  per_epoch = data.steps_per_epoch(n, b)
  epoch0 = np.concatenate([data.batch_indices(7, s, n, b) for s in range(per_epoch)])
  assert len(np.unique(epoch0)) == per_epoch * b  # no repeats within an epoch
  np.testing.assert_array_equal(data.batch_indices(7, 13, n, b), data.batch_indices(7, 13, n, b))
  assert not np.array_equal(data.batch_indices(7, 0, n, b), data.batch_indices(7, per_epoch, n, b))
  assert not np.array_equal(data.batch_indices(7, 0, n, b), data.batch_indices(8, 0, n, b))
  with pytest.raises(ValueError, match="exceeds"):
    data.batch_indices(0, 0, 5, 10)


def test_to_unit_on_device_equals_host_bit_for_bit():
  """Device-resident uint8 data is scaled inside jit; the batches must equal the host's."""
  import jax  # pylint: disable=import-outside-toplevel
  pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
  host = data.to_unit(pixels)
  device = np.asarray(jax.jit(data.to_unit)(pixels))
  assert host.dtype == device.dtype == np.float32
  np.testing.assert_array_equal(host, device)
  floats = np.linspace(0, 1, 5, dtype=np.float32)
  np.testing.assert_array_equal(np.asarray(jax.jit(data.to_unit)(floats)), floats)
