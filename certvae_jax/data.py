"""Data sources and deterministic, step-indexed batching.

``config.data.source``: ``digits`` (scikit-learn's bundled 8x8 digits; nothing is
downloaded), ``npz:PATH`` (your arrays ``x``, optional ``y``, ``x_test``, ``y_test``) or
``tfds:NAME`` (a prepared TFDS image dataset, read through ``tfds.data_source``). Images
stay ``uint8`` in memory; :func:`to_unit` scales a batch to float32 in [0, 1] when it is
used. The batch at step ``t`` is a slice of a permutation drawn for its epoch from
``(data_seed, t)``, so a restart at step ``t`` continues the exact data stream with no
iterator state to save.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
  """In-memory splits, flattened per example.

  Attributes:
    name: the source string it came from.
    x_train, x_test: ``(N, D)`` inputs, float32 in [0, 1] or uint8 in [0, 255]; pass
      batches through :func:`to_unit`.
    y_train, y_test: ``(N,)`` int labels, or ``None``.
    example_shape: the shape of one example before flattening (e.g. ``(8, 8)``).
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray | None
  x_test: np.ndarray
  y_test: np.ndarray | None
  example_shape: tuple[int, ...]

  @property
  def num_classes(self) -> int | None:
    if self.y_train is None:
      return None
    return int(max(self.y_train.max(), -1 if self.y_test is None else self.y_test.max())) + 1


# XLA:CPU reads a host array in place, without a copy, when its data start on a boundary of
# this many bytes; the loaders allocate the splits so (see :func:`aligned_empty`).
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
  """An uninitialised C-ordered array whose data start on an :data:`ALIGNMENT` boundary.

  On a CPU, ``jax.device_put(x, ..., may_alias=True)`` then shares ``x``'s memory instead
  of copying it, so device-resident training data cost no second copy of the split.
  """
  dtype = np.dtype(dtype)
  size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  buffer = np.empty(size + ALIGNMENT, np.uint8)
  start = -buffer.ctypes.data % ALIGNMENT
  return buffer[start:start + size].view(dtype).reshape(shape)


def aligned(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
  """``x`` (or its ``rows``) in memory from :func:`aligned_empty`; ``x`` itself when it is
  already there and no rows are asked for."""
  if rows is None:
    if x.flags.c_contiguous and x.ctypes.data % ALIGNMENT == 0:
      return x
    out = aligned_empty(x.shape, x.dtype)
    out[...] = x
    return out
  return np.take(x, rows, axis=0, out=aligned_empty((len(rows),) + x.shape[1:], x.dtype))


def to_unit(x):
  """A batch as float32 in [0, 1] (uint8 pixels are multiplied by 1/255 in float32).

  Works on NumPy arrays on the host and on JAX arrays inside jit, with the same values.
  """
  if x.dtype == np.uint8:
    return x.astype(np.float32) * np.float32(1.0 / 255.0)
  return x


def load_dataset(source: str, *, test_fraction: float = 0.2, split_seed: int = 0,
                 data_dir: str | None = None) -> Dataset:
  """Loads a dataset by source string (see module docstring).

  Args:
    source: ``"digits"``, ``"npz:PATH"`` or ``"tfds:NAME"``.
    test_fraction: held-out fraction when the source has no test split.
    split_seed: seed of the fixed train/test split.
    data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).

  Raises:
    ValueError: unknown source, missing file, or invalid arrays (named in the message).
  """
  if not isinstance(source, str) or not source:
    raise ValueError(f"data.source: expected 'digits', 'npz:PATH' or 'tfds:NAME', got {source!r}")
  if not isinstance(test_fraction, float) or not 0.0 < test_fraction < 1.0:
    raise ValueError(f"data.test_fraction: expected a value in (0, 1), got {test_fraction}")
  if source == "digits":
    return _load_digits(test_fraction, split_seed)
  if source.startswith("npz:"):
    return _load_npz(source, source[len("npz:"):], test_fraction, split_seed)
  if source.startswith("tfds:"):
    return _load_tfds(source, source[len("tfds:"):], data_dir)
  raise ValueError(f"data.source: unknown source {source!r}; expected 'digits', 'npz:PATH' "
                   "or 'tfds:NAME'")


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  perm = np.random.default_rng(seed).permutation(n)
  n_test = max(1, int(round(n * test_fraction)))
  return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _load_digits(test_fraction: float, split_seed: int) -> Dataset:
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  bunch = load_digits()
  x = (bunch.data / 16.0).astype(np.float32)  # pixel values are 0..16
  y = bunch.target.astype(np.int32)
  tr, te = _split(len(x), test_fraction, split_seed)
  return Dataset("digits", aligned(x, tr), y[tr], aligned(x, te), y[te], (8, 8))


def _as_unit_float(name: str, x: np.ndarray) -> np.ndarray:
  if x.ndim < 2:
    raise ValueError(f"{name}: expected shape (N, ...) with at least 2 dimensions, got {x.shape}")
  if x.shape[0] < 2:
    raise ValueError(f"{name}: needs at least 2 examples, got {x.shape[0]}")
  if x[0].size == 0:
    raise ValueError(f"{name}: examples have no features, got shape {x.shape}")
  if x.dtype == np.uint8:
    return x.reshape(len(x), -1)  # kept as uint8; to_unit scales each batch
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name}: expected uint8 or float values, got dtype {x.dtype}")
  flat = aligned_empty((len(x), x[0].size), np.float32)
  flat[...] = x.reshape(len(x), -1)
  bad = ~np.isfinite(flat).all(axis=1)
  if bad.any():
    raise ValueError(f"{name}: example {int(np.argmax(bad))} has NaN or inf values")
  lo, hi = float(flat.min()), float(flat.max())
  if lo < 0.0 or hi > 1.0:
    raise ValueError(f"{name}: float inputs must lie in [0, 1], found range [{lo:.3g}, {hi:.3g}]")
  return flat


def _as_labels(name: str, y: np.ndarray, n: int) -> np.ndarray:
  if y.ndim != 1 or len(y) != n:
    raise ValueError(f"{name}: expected shape ({n},) to match the inputs, got {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name}: expected integer labels, got dtype {y.dtype}")
  if (y < 0).any():
    raise ValueError(f"{name}: labels must be >= 0, found {int(y.min())}")
  return y.astype(np.int32)


def _load_npz(source: str, path: str, test_fraction: float, split_seed: int) -> Dataset:
  if not os.path.isfile(path):
    raise ValueError(f"data.source: {source!r}: no such file {path!r}")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # zip/format errors surface as many types
    raise ValueError(f"data.source: {source!r}: cannot read as .npz ({e})") from e
  if "x" not in arrays:
    raise ValueError(f"data.source: {source!r}: missing array 'x' (found {sorted(arrays)})")
  x = _as_unit_float("x", arrays["x"])
  y = _as_labels("y", arrays["y"], len(x)) if "y" in arrays else None
  shape = tuple(arrays["x"].shape[1:])
  if "x_test" in arrays:
    x_test = _as_unit_float("x_test", arrays["x_test"])
    if tuple(arrays["x_test"].shape[1:]) != shape:
      raise ValueError(f"x_test: examples of shape {tuple(arrays['x_test'].shape[1:])} differ "
                       f"from x's {shape}")
    y_test = _as_labels("y_test", arrays["y_test"], len(x_test)) if "y_test" in arrays else None
    if (y is None) != (y_test is None):
      raise ValueError("y / y_test: give labels for both splits or for neither")
    return Dataset(source, aligned(x), y, aligned(x_test), y_test, shape)
  tr, te = _split(len(x), test_fraction, split_seed)
  return Dataset(source, aligned(x, tr), None if y is None else y[tr], aligned(x, te),
                 None if y is None else y[te], shape)


def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = data_dir or "~/tensorflow_datasets"
  return (f"on a machine with internet access run: python -c \"import tensorflow_datasets as "
          f"tfds; tfds.builder('{name}', data_dir='{where}', file_format='array_record')"
          f".download_and_prepare()\" (with tensorflow installed there), then copy "
          f"{where}/{name} to {where} on this machine (or set config.data.data_dir)")


def _load_tfds(source: str, name: str, data_dir: str | None) -> Dataset:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if not name:
    raise ValueError(f"data.source: {source!r}: expected tfds:NAME, e.g. tfds:cifar100")
  splits = {}
  for split in ("train", "test", "validation"):
    try:
      splits[split] = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(f"data.source: {source!r}: TFDS has no dataset {name!r}") from e
    except (ValueError, KeyError) as e:
      if split == "train" or "split" not in str(e).lower():
        raise ValueError(f"data.source: {source!r}: {str(e).splitlines()[0]}") from e
    except (NotImplementedError, FileNotFoundError, AssertionError, OSError) as e:
      raise ValueError(f"data.source: {source!r}: the data is not prepared in ArrayRecord "
                       f"format; {_prepare_hint(name, data_dir)}") from e
    if split == "test" and "test" in splits:
      break
  test_split = splits.get("test", splits.get("validation"))
  if test_split is None:
    raise ValueError(f"data.source: {source!r}: needs a 'test' or 'validation' split")
  x, y = _read_images(source, splits["train"])
  x_test, y_test = _read_images(source, test_split)
  return Dataset(source, x.reshape(len(x), -1), y, x_test.reshape(len(x_test), -1), y_test,
                 tuple(x.shape[1:]))


def _read_images(source: str, ds) -> tuple[np.ndarray, np.ndarray | None]:
  """Every record's ``image`` (uint8) and ``label`` (if any), by random access."""
  if len(ds) < 2:
    raise ValueError(f"data.source: {source!r}: a split has {len(ds)} examples; needs >= 2")
  first = ds[0]
  if "image" not in first:
    raise ValueError(f"data.source: {source!r}: records have no 'image' feature "
                     f"(features: {sorted(first)})")
  images = aligned_empty((len(ds),) + np.shape(first["image"]), np.uint8)
  labels = np.empty(len(ds), np.int32) if "label" in first else None
  for i in range(len(ds)):
    record = ds[i]
    images[i] = record["image"]
    if labels is not None:
      labels[i] = record["label"]
  return images, labels


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder of each permutation is dropped)."""
  if batch_size < 1:
    raise ValueError(f"train.batch_size: expected >= 1, got {batch_size}")
  if batch_size > num_examples:
    raise ValueError(
        f"train.batch_size: {batch_size} exceeds the {num_examples} training examples")
  return num_examples // batch_size


def batch_indices(data_seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Indices of the batch at ``step``: a pure function of its arguments.

  Args:
    data_seed: seed of the data stream.
    step: global training step.
    num_examples: size of the training split.
    batch_size: global batch size.

  Returns:
    ``(batch_size,)`` int indices, without repeats inside an epoch.
  """
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, offset = divmod(int(step), per_epoch)
  perm = _epoch_permutation(int(data_seed), epoch, int(num_examples))
  return perm[offset * batch_size:(offset + 1) * batch_size]


@functools.lru_cache(maxsize=4)
def _epoch_permutation(data_seed: int, epoch: int, num_examples: int) -> np.ndarray:
  # Cached so that a step costs a slice, not a fresh O(N) permutation.
  perm = np.random.default_rng([data_seed, epoch]).permutation(num_examples)
  perm.setflags(write=False)
  return perm
