"""The teacher artifact on disk: arrays, the QC table and the cached targets.

``WORKDIR/teacher/`` holds ``teacher.npz`` (the frozen GMM, the warm-up encoder's
parameters and, for a PCA-GMM teacher, the frozen PCA), ``teacher.json`` (the candidate table, the selection, the stress-case
flag and a content hash) and ``targets_train.npy`` (``T_fix``, paper 1, section 3).
Files are written under temporary names and renamed, and loading checks the content
hash, so a damaged artifact is reported, never used.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from certvae_jax import files
from certvae_jax.teachers.frozen import FrozenGMM, FrozenPCA, FrozenTeacher

_ARRAYS = "teacher.npz"
_INFO = "teacher.json"
_TARGETS = "targets_train.npy"
_TEST_TARGETS = "targets_test.npy"


def _flatten(tree: Any) -> dict[str, np.ndarray]:
  if not tree:  # a teacher of the inputs themselves keeps no encoder
    return {}
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  return {f"encoder/{k}": np.asarray(v) for k, v in flat.items()}


def teacher_arrays(teacher: FrozenTeacher) -> dict[str, np.ndarray]:
  """Every array of the teacher under a stable name."""
  arrays = _flatten(teacher.encoder_params)
  arrays.update({"gmm/log_weights": np.asarray(teacher.gmm.log_weights),
                 "gmm/means": np.asarray(teacher.gmm.means),
                 "gmm/precisions_cholesky": np.asarray(teacher.gmm.precisions_cholesky)})
  if teacher.projection is not None:
    arrays.update({"pca/mean": np.asarray(teacher.projection.mean),
                   "pca/components": np.asarray(teacher.projection.components)})
  return arrays


def teacher_id(teacher: FrozenTeacher) -> str:
  """A content hash of the teacher's arrays and covariance type (16 hex digits)."""
  h = hashlib.sha256(teacher.gmm.covariance_type.encode())
  for name, arr in sorted(teacher_arrays(teacher).items()):
    h.update(name.encode())
    h.update(str(arr.dtype).encode() + str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:16]


def save_teacher(directory: str, teacher: FrozenTeacher, info: dict[str, Any],
                 train_targets: np.ndarray | None = None) -> str:
  """Writes the artifact (arrays, JSON info with the candidate table, T_fix cache).

  Files are written under temporary names and renamed, so a crash never leaves a
  half-written artifact under the final names.

  Returns:
    The teacher id.
  """
  os.makedirs(directory, exist_ok=True)
  tid = teacher_id(teacher)
  info = dict(info, teacher_id=tid, kind="gmm", covariance_type=teacher.gmm.covariance_type,
              num_components=teacher.num_classes)
  if train_targets is not None:
    save_train_targets(directory, train_targets)
  files.atomic_write(os.path.join(directory, _ARRAYS),
                     lambda fh: np.savez(fh, **teacher_arrays(teacher)))
  files.write_json(os.path.join(directory, _INFO), info)
  return tid



# Artifacts of 0.2 and before record no "given_by"; these kinds were given by their rows.
_ROW_KINDS_0_2 = ("label_smoothed", "rows")


def _targets_id(train_targets: np.ndarray, test_targets: np.ndarray) -> str:
  h = hashlib.sha256(b"label_smoothed")
  for arr in (train_targets, test_targets):
    arr = np.ascontiguousarray(arr, np.float32)
    h.update(str(arr.shape).encode() + arr.tobytes())
  return h.hexdigest()[:16]


def save_rows_teacher(directory: str, train_targets: np.ndarray, test_targets: np.ndarray,
                      info: dict[str, Any], kind: str) -> str:
  """Writes a teacher given by its rows on both splits: paper 2's label smoothing
  (``kind='label_smoothed'``), a user's saved rows (``kind='rows'``), or another kind's.

  Such a teacher is not a function of ``x`` we can evaluate, so its rows are the
  artifact: ``targets_train.npy`` and ``targets_test.npy``.

  Returns:
    The teacher id (a hash of both arrays).
  """
  os.makedirs(directory, exist_ok=True)
  tid = _targets_id(train_targets, test_targets)
  for name, arr in ((_TARGETS, train_targets), (_TEST_TARGETS, test_targets)):
    files.atomic_write(os.path.join(directory, name),
                       lambda fh, a=arr: np.save(fh, np.asarray(a, np.float32)))
  info = dict(info, teacher_id=tid, kind=kind, given_by="rows",
              num_components=int(np.shape(train_targets)[1]))
  files.write_json(os.path.join(directory, _INFO), info)
  return tid


def load_test_targets(directory: str) -> np.ndarray:
  """The cached test-split rows of a teacher given by its rows."""
  path = os.path.join(directory, _TEST_TARGETS)
  if not os.path.isfile(path):
    raise ValueError(f"teacher: no test-target cache {path!r}")
  return _load_arrays(path)[""]


def teacher_exists(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, _INFO))


def load_teacher(directory: str) -> tuple[FrozenTeacher | None, dict[str, Any]]:
  """Reads an artifact written by :func:`save_teacher` (or :func:`save_rows_teacher`,
  returned as ``(None, info)``) and checks its content hash.

  Raises:
    ValueError: missing or damaged artifact (its content hash does not match).
  """
  info_path = os.path.join(directory, _INFO)
  info = files.read_json(info_path)
  if info is None:
    raise ValueError(f"teacher: no teacher artifact in {directory!r}")
  if not isinstance(info.get("teacher_id"), str):
    raise files.DamagedFile(f"{info_path}: damaged (no teacher_id); delete it and rerun to "
                            "rebuild it")
  if info.get("given_by") == "rows" or info.get("kind") in _ROW_KINDS_0_2:
    found = _targets_id(load_train_targets(directory), load_test_targets(directory))
    if found != info["teacher_id"]:
      raise files.DamagedFile(f"teacher: the artifact in {directory!r} is damaged (content "
                              f"hash {found} != recorded {info['teacher_id']})")
    return None, info
  arrays = _load_arrays(os.path.join(directory, _ARRAYS))
  enc = flax.traverse_util.unflatten_dict(
      {tuple(k.split("/")[1:]): jnp.asarray(v) for k, v in arrays.items()
       if k.startswith("encoder/")})
  gmm = FrozenGMM(log_weights=jnp.asarray(arrays["gmm/log_weights"]),
                  means=jnp.asarray(arrays["gmm/means"]),
                  precisions_cholesky=jnp.asarray(arrays["gmm/precisions_cholesky"]),
                  covariance_type=info["covariance_type"])
  projection = (FrozenPCA(mean=jnp.asarray(arrays["pca/mean"]),
                          components=jnp.asarray(arrays["pca/components"]))
                if "pca/mean" in arrays else None)
  teacher = FrozenTeacher(encoder_params=enc or None, gmm=gmm, projection=projection)
  if teacher_id(teacher) != info["teacher_id"]:
    raise files.DamagedFile(f"teacher: the artifact in {directory!r} is damaged (content "
                            f"hash {teacher_id(teacher)} != recorded {info['teacher_id']})")
  return teacher, info


def _load_arrays(path: str) -> dict[str, np.ndarray]:
  """The arrays of an ``.npy`` or ``.npz`` file; a missing, truncated or foreign file is
  a :class:`~certvae_jax.files.DamagedFile` naming it."""
  try:
    with open(path, "rb") as fh:
      loaded = np.load(fh, allow_pickle=False)
      if isinstance(loaded, np.ndarray):
        return {"": loaded}
      with loaded:
        return {k: loaded[k] for k in loaded.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise files.DamagedFile(f"{path}: damaged or missing ({type(e).__name__}: {e}); delete "
                            "it and rerun to rebuild it") from e


def load_train_targets(directory: str) -> np.ndarray:
  """The cached fixed targets ``T_fix`` over the training split."""
  return _load_arrays(os.path.join(directory, _TARGETS))[""]


def save_train_targets(directory: str, train_targets: np.ndarray) -> None:
  """Writes the fixed-target cache ``T_fix`` again (atomically)."""
  files.atomic_write(os.path.join(directory, _TARGETS),
                     lambda fh: np.save(fh, np.asarray(train_targets, np.float32)))
