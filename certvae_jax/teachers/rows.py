"""A teacher given by its rows: ``teacher.kind='npz:PATH'``.

Paper 1 (section 1) names pretrained and self-supervised models as teachers. Any such
model can be used without porting it: save its rows ``T(.|x)`` on both splits as an
``.npz`` with arrays ``train`` (``(N_train, K)``) and ``test`` (``(N_test, K)``), in the
order of the data set's splits (:func:`certvae_jax.data.load_dataset`). The rows are the
teacher, so only the fixed-target protocol applies: training reads the rows of its
batch (``--target=live`` and ``--target=fixed`` feed the same rows), and the
reconstruction-side check, which needs ``T`` of any input, is skipped.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from certvae_jax.certificate.validation import validate_simplex


def load_rows(path: str, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
  """The ``train`` and ``test`` rows of ``path``, checked against the split sizes.

  Raises:
    ValueError: a missing or unreadable file, a missing array, wrong shapes, fewer than
      2 classes, or rows off the simplex (naming the array and the problem).
  """
  where = f"config.teacher.kind: npz:{path}"
  if not os.path.isfile(path):
    raise ValueError(f"{where}: no such file")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {name: np.asarray(f[name], np.float32) for name in ("train", "test")
                if name in f.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{where}: cannot read it as .npz ({e})") from e
  for name, n in (("train", n_train), ("test", n_test)):
    if name not in arrays:
      raise ValueError(f"{where}: no array {name!r} (expected 'train' and 'test' rows)")
    a = arrays[name]
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] < 2:
      raise ValueError(f"{where}: {name!r} must have shape ({n}, K >= 2) to match the "
                       f"{name} split, got {a.shape}")
  if arrays["train"].shape[1] != arrays["test"].shape[1]:
    raise ValueError(f"{where}: 'train' and 'test' have different K "
                     f"({arrays['train'].shape[1]} != {arrays['test'].shape[1]})")
  for name in ("train", "test"):
    validate_simplex(f"{where} {name!r}", arrays[name])
  return arrays["train"], arrays["test"]


def file_digest(path: str) -> str:
  """A content hash of the file (16 hex digits), so edited rows are a different teacher."""
  h = hashlib.sha256()
  with open(path, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:16]
