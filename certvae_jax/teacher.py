"""Fixed teachers ``T(.|x)``: GMM search and quality control, freezing, artifacts.

Paper 1, sections 2.2 and 3:

1. collect warm-up encoder means ``mu(x)`` on the training set;
2. fit candidate ``GaussianMixture`` models on the host over a grid (components x
   covariance type x seed);
3. score each: ``I_T``, mean top-1 margin, high-margin fraction, hard balance
   ``KL(hist(argmax T) || U)``, soft usage ``KL(Tbar || U)``, minimum component mass;
4. keep the feasible ones (thresholds checked minimum mass first) and pick the best
   by ``I_T`` (ties: margin); with none feasible keep the best anyway and flag a
   **stress case** (reported separately, never pooled);
5. freeze the GMM as arrays beside a snapshot of the warm-up encoder, so that
   ``T(x)`` is a pure jit-able function of any input (equal to scikit-learn's
   ``predict_proba`` on the same features).

Paper 2's teacher, label smoothing ``T = (1 - eps) e_y + eps / K``, is
:func:`label_smoothed`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax import certificate

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


# ---------------------------------------------------------------------------
# The frozen GMM and T(x) as pure functions.
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class FrozenGMM:
  """A fitted Gaussian mixture as arrays (scikit-learn's parameterisation).

  Attributes:
    log_weights: ``(K,)`` log mixing weights.
    means: ``(K, d)`` component means.
    precisions_cholesky: Cholesky factors of the precisions; shape by type:
      full ``(K, d, d)``, tied ``(d, d)``, diag ``(K, d)``, spherical ``(K,)``.
    covariance_type: one of :data:`COVARIANCE_TYPES` (static).
  """
  log_weights: jnp.ndarray
  means: jnp.ndarray
  precisions_cholesky: jnp.ndarray
  covariance_type: str = flax.struct.field(pytree_node=False)

  @property
  def num_components(self) -> int:
    return int(self.means.shape[0])


# Full float32 products (the GPU/TPU default rounds operands to TF32 / bf16 passes):
# T(x) must match scikit-learn's predict_proba on every backend.
_EXACT = jax.lax.Precision.HIGHEST


def _component_log_density(gmm: FrozenGMM, f: jnp.ndarray) -> jnp.ndarray:
  """``log N(f | mean_k, Sigma_k)`` for each row and component, shape ``(N, K)``."""
  d = f.shape[-1]
  diff = f[:, None, :] - gmm.means[None, :, :]  # (N, K, d); centred first for float32 accuracy
  p = gmm.precisions_cholesky
  ct = gmm.covariance_type
  if ct == "full":
    y = jnp.einsum("nkd,kde->nke", diff, p, precision=_EXACT)
    log_det = jnp.sum(jnp.log(jnp.diagonal(p, axis1=1, axis2=2)), axis=-1)
  elif ct == "tied":
    y = jnp.einsum("nkd,de->nke", diff, p, precision=_EXACT)
    log_det = jnp.sum(jnp.log(jnp.diag(p)))
  elif ct == "diag":
    y = diff * p[None]
    log_det = jnp.sum(jnp.log(p), axis=-1)
  elif ct == "spherical":
    y = diff * p[None, :, None]
    log_det = d * jnp.log(p)
  else:
    raise ValueError(f"covariance_type: unknown {ct!r}; expected one of {COVARIANCE_TYPES}")
  return -0.5 * (d * jnp.log(2 * jnp.pi) + jnp.sum(jnp.square(y), axis=-1)) + log_det


def gmm_probs(gmm: FrozenGMM, features: jnp.ndarray) -> jnp.ndarray:
  """Responsibilities ``p(k | f)``, equal to ``GaussianMixture.predict_proba``.

  Args:
    gmm: the frozen mixture.
    features: ``(N, d)`` features (warm-up encoder means).

  Returns:
    ``(N, K)`` rows on the simplex.
  """
  logits = _component_log_density(gmm, features) + gmm.log_weights[None, :]
  return jax.nn.softmax(logits, axis=-1)


@flax.struct.dataclass
class FrozenTeacher:
  """``T(x) = GMM(mu_warmup(x))``: the GMM and the warm-up encoder's parameters."""
  encoder_params: Any
  gmm: FrozenGMM

  @property
  def num_classes(self) -> int:
    return self.gmm.num_components


def teacher_probs(encoder_apply: Callable[..., Any], teacher: FrozenTeacher,
                  x: jnp.ndarray) -> jnp.ndarray:
  """``T(x)`` for any input: a pure, jit-able function.

  Args:
    encoder_apply: ``module.apply`` of the encoder architecture used in warm-up;
      called as ``encoder_apply({'params': p}, x)`` and returning ``(mu, logvar)``.
    teacher: the frozen teacher.
    x: ``(N, D)`` inputs.
  """
  mu, _ = encoder_apply({"params": teacher.encoder_params}, x)
  return gmm_probs(teacher.gmm, mu)


def label_smoothed(labels: np.ndarray, num_classes: int, eps: float) -> np.ndarray:
  """Paper 2's teacher ``T = (1 - eps) e_y + eps / K`` (float32 rows).

  Raises:
    ValueError: labels outside ``[0, K)``, non-integer labels, or ``eps`` not in [0, 1].
  """
  y = np.asarray(labels)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels: expected a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
  if num_classes < 2:
    raise ValueError(f"num_classes: needs K >= 2, got {num_classes}")
  if len(y) and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"labels: expected values in [0, {num_classes}), found "
                     f"[{y.min()}, {y.max()}]")
  if not 0.0 <= eps <= 1.0:
    raise ValueError(f"eps: expected a value in [0, 1], got {eps}")
  return ((1.0 - eps) * np.eye(num_classes)[y] + eps / num_classes).astype(np.float32)


# ---------------------------------------------------------------------------
# Quality control.
# ---------------------------------------------------------------------------


def score_teacher(probs: np.ndarray, high_margin: float = 0.5) -> dict[str, float]:
  """The QC scores of paper 1, section 3, on a teacher's rows (float64, host).

  Args:
    probs: ``(N, K)`` teacher rows on the training features.
    high_margin: top-1 margin ``p1 - p2`` counted as "high".

  Returns:
    ``teacher_mi``, ``mean_margin``, ``high_margin_fraction``, ``hard_balance_kl``,
    ``soft_usage_kl``, ``min_mass``.
  """
  p = np.asarray(probs, np.float64)
  k = p.shape[1]
  top2 = -np.sort(-p, axis=1)[:, :2]
  gap = top2[:, 0] - top2[:, 1]
  hist = np.bincount(np.argmax(p, axis=1), minlength=k) / len(p)
  tbar = p.mean(0)
  return {
      "teacher_mi": float(certificate.teacher_mi(p, validate=False)) if len(p) else 0.0,
      "mean_margin": float(gap.mean()),
      "high_margin_fraction": float((gap >= high_margin).mean()),
      "hard_balance_kl": _kl_to_uniform(hist),
      "soft_usage_kl": _kl_to_uniform(tbar),
      "min_mass": float(tbar.min()),
  }


def _kl_to_uniform(p: np.ndarray) -> float:
  nz = p[p > 0]
  return float(np.sum(nz * np.log(nz * len(p))))


def feasibility(scores: dict[str, float], thresholds: Any) -> tuple[bool, str]:
  """Checks the QC thresholds, minimum mass first; returns (feasible, first failure)."""
  checks = (
      ("min_mass", scores["min_mass"] >= thresholds.min_mass, ">=", thresholds.min_mass),
      ("teacher_mi", scores["teacher_mi"] >= thresholds.min_mi, ">=", thresholds.min_mi),
      ("mean_margin", scores["mean_margin"] >= thresholds.min_mean_margin, ">=",
       thresholds.min_mean_margin),
      ("hard_balance_kl", scores["hard_balance_kl"] <= thresholds.max_hard_balance_kl, "<=",
       thresholds.max_hard_balance_kl),
      ("soft_usage_kl", scores["soft_usage_kl"] <= thresholds.max_soft_usage_kl, "<=",
       thresholds.max_soft_usage_kl),
  )
  for name, ok, op, bound in checks:
    if not ok:
      return False, f"{name}={scores[name]:.4g} fails {op} {bound:g}"
  return True, ""


# ---------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------


class TeacherSearch(NamedTuple):
  """Result of the candidate grid.

  Attributes:
    gmm: the selected mixture, frozen.
    candidates: one dict per grid point (settings, scores, feasibility, reason).
    selected: index of the selected candidate in ``candidates``.
    stress_case: no candidate was feasible; the selection is the best infeasible one.
  """
  gmm: FrozenGMM
  candidates: list[dict[str, Any]]
  selected: int
  stress_case: bool


def freeze_sklearn_gmm(gm: Any) -> FrozenGMM:
  """Turns a fitted ``sklearn.mixture.GaussianMixture`` into float32 arrays."""
  return FrozenGMM(
      log_weights=jnp.asarray(np.log(gm.weights_), jnp.float32),
      means=jnp.asarray(gm.means_, jnp.float32),
      precisions_cholesky=jnp.asarray(gm.precisions_cholesky_, jnp.float32),
      covariance_type=str(gm.covariance_type))


def _check_search_input(features: np.ndarray, components: Sequence[int],
                        covariance_types: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
  f = np.asarray(features, np.float64)  # sklearn fits ~2x faster in float64 (float32 responsibilities underflow to denormals)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"features: expected shape (N >= 2, d), got {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("features: contain NaN or inf (did warm-up diverge?)")
  if not components or not covariance_types or not seeds:
    raise ValueError("teacher: components, covariance_types and seeds must be non-empty")
  for ct in covariance_types:
    if ct not in COVARIANCE_TYPES:
      raise ValueError(f"teacher.covariance_types: unknown {ct!r}; expected {COVARIANCE_TYPES}")
  distinct = len(np.unique(f, axis=0))
  for k in components:
    if int(k) < 2:
      raise ValueError(f"teacher.components: needs K >= 2, got {k}")
    if int(k) > len(f):
      raise ValueError(f"teacher.components: K={k} exceeds the number of training points "
                       f"N={len(f)}")
    if int(k) > distinct:
      raise ValueError(f"teacher.components: K={k} exceeds the {distinct} distinct feature "
                       "points (collapsed warm-up encoder?)")
  return f


def search_teacher(features: np.ndarray, config: Any) -> TeacherSearch:
  """Fits and scores the candidate grid and selects the teacher (paper 1, section 2.2).

  Args:
    features: ``(N, d)`` warm-up encoder means on the training set.
    config: ``config.teacher`` with ``components``, ``covariance_types``, ``seeds``,
      ``max_iter``, ``reg_covar``, ``high_margin`` and the thresholds ``min_mass``,
      ``min_mi``, ``min_mean_margin``, ``max_hard_balance_kl``, ``max_soft_usage_kl``.

  Returns:
    A :class:`TeacherSearch`. Never raises for an infeasible grid (stress case).

  Raises:
    ValueError: malformed features or grid, or no candidate could be fitted at all.
  """
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=import-outside-toplevel
  from sklearn.mixture import GaussianMixture  # pylint: disable=import-outside-toplevel

  f = _check_search_input(features, config.components, config.covariance_types, config.seeds)
  candidates, fitted = [], []
  for k, ct, seed in itertools.product(config.components, config.covariance_types, config.seeds):
    row = {"components": int(k), "covariance_type": ct, "seed": int(seed)}
    gm = GaussianMixture(n_components=int(k), covariance_type=ct, random_state=int(seed),
                         max_iter=int(config.max_iter), reg_covar=float(config.reg_covar))
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(f)
    except (ValueError, np.linalg.LinAlgError) as e:
      row.update(fitted=False, feasible=False, reason=f"fit failed: {e}")
      candidates.append(row)
      fitted.append(None)
      continue
    row.update(scores=score_teacher(gm.predict_proba(f), config.high_margin),
               converged=bool(gm.converged_), fitted=True)
    row["feasible"], row["reason"] = feasibility(row["scores"], config)
    candidates.append(row)
    fitted.append(gm)
  usable = [i for i, g in enumerate(fitted) if g is not None]
  if not usable:
    raise ValueError("teacher: no GMM candidate could be fitted; see the reasons: "
                     + "; ".join(c["reason"] for c in candidates))
  feasible = [i for i in usable if candidates[i]["feasible"]]
  pool = feasible or usable
  best = max(pool, key=lambda i: (candidates[i]["scores"]["teacher_mi"],
                                  candidates[i]["scores"]["mean_margin"]))
  return TeacherSearch(gmm=freeze_sklearn_gmm(fitted[best]), candidates=candidates,
                       selected=best, stress_case=not feasible)


# ---------------------------------------------------------------------------
# Artifact on disk.
# ---------------------------------------------------------------------------

_ARRAYS = "teacher.npz"
_INFO = "teacher.json"
_TARGETS = "targets_train.npy"
_TEST_TARGETS = "targets_test.npy"


def _flatten(tree: Any) -> dict[str, np.ndarray]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  return {f"encoder/{k}": np.asarray(v) for k, v in flat.items()}


def teacher_arrays(teacher: FrozenTeacher) -> dict[str, np.ndarray]:
  """Every array of the teacher under a stable name."""
  arrays = _flatten(teacher.encoder_params)
  arrays.update({"gmm/log_weights": np.asarray(teacher.gmm.log_weights),
                 "gmm/means": np.asarray(teacher.gmm.means),
                 "gmm/precisions_cholesky": np.asarray(teacher.gmm.precisions_cholesky)})
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
    _atomic_write(os.path.join(directory, _TARGETS),
                  lambda fh: np.save(fh, np.asarray(train_targets, np.float32)))
  _atomic_write(os.path.join(directory, _ARRAYS),
                lambda fh: np.savez(fh, **teacher_arrays(teacher)))
  _atomic_write(os.path.join(directory, _INFO),
                lambda fh: fh.write(json.dumps(info, indent=1).encode()))
  return tid


def _atomic_write(path: str, write: Callable[[Any], Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as fh:
    write(fh)
    fh.flush()
    os.fsync(fh.fileno())
  os.replace(tmp, path)


def _targets_id(train_targets: np.ndarray, test_targets: np.ndarray) -> str:
  h = hashlib.sha256(b"label_smoothed")
  for arr in (train_targets, test_targets):
    arr = np.ascontiguousarray(arr, np.float32)
    h.update(str(arr.shape).encode() + arr.tobytes())
  return h.hexdigest()[:16]


def save_label_teacher(directory: str, train_targets: np.ndarray, test_targets: np.ndarray,
                       info: dict[str, Any]) -> str:
  """Writes a teacher given by its rows on both splits (paper 2's label smoothing).

  Such a teacher is a function of the label, not of ``x``, so its rows are the
  artifact: ``targets_train.npy`` and ``targets_test.npy``.

  Returns:
    The teacher id (a hash of both arrays).
  """
  os.makedirs(directory, exist_ok=True)
  tid = _targets_id(train_targets, test_targets)
  for name, arr in ((_TARGETS, train_targets), (_TEST_TARGETS, test_targets)):
    _atomic_write(os.path.join(directory, name),
                  lambda fh, a=arr: np.save(fh, np.asarray(a, np.float32)))
  info = dict(info, teacher_id=tid, kind="label_smoothed",
              num_components=int(np.shape(train_targets)[1]))
  _atomic_write(os.path.join(directory, _INFO),
                lambda fh: fh.write(json.dumps(info, indent=1).encode()))
  return tid


def load_test_targets(directory: str) -> np.ndarray:
  """The cached test-split rows of a label-smoothed teacher."""
  path = os.path.join(directory, _TEST_TARGETS)
  if not os.path.isfile(path):
    raise ValueError(f"teacher: no test-target cache {path!r}")
  return np.load(path)


def teacher_exists(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, _INFO))


def load_teacher(directory: str) -> tuple[FrozenTeacher | None, dict[str, Any]]:
  """Reads an artifact written by :func:`save_teacher` (or :func:`save_label_teacher`,
  returned as ``(None, info)``) and checks its content hash.

  Raises:
    ValueError: missing or damaged artifact (its content hash does not match).
  """
  info_path = os.path.join(directory, _INFO)
  if not os.path.isfile(info_path):
    raise ValueError(f"teacher: no teacher artifact in {directory!r}")
  with open(info_path) as fh:
    info = json.load(fh)
  if info.get("kind") == "label_smoothed":
    found = _targets_id(load_train_targets(directory), load_test_targets(directory))
    if found != info["teacher_id"]:
      raise ValueError(f"teacher: the artifact in {directory!r} is damaged (content hash "
                       f"{found} != recorded {info['teacher_id']})")
    return None, info
  with np.load(os.path.join(directory, _ARRAYS)) as f:
    arrays = {k: f[k] for k in f.files}
  enc = flax.traverse_util.unflatten_dict(
      {tuple(k.split("/")[1:]): jnp.asarray(v) for k, v in arrays.items()
       if k.startswith("encoder/")})
  gmm = FrozenGMM(log_weights=jnp.asarray(arrays["gmm/log_weights"]),
                  means=jnp.asarray(arrays["gmm/means"]),
                  precisions_cholesky=jnp.asarray(arrays["gmm/precisions_cholesky"]),
                  covariance_type=info["covariance_type"])
  teacher = FrozenTeacher(encoder_params=enc, gmm=gmm)
  if teacher_id(teacher) != info["teacher_id"]:
    raise ValueError(f"teacher: the artifact in {directory!r} is damaged (content hash "
                     f"{teacher_id(teacher)} != recorded {info['teacher_id']})")
  return teacher, info


def load_train_targets(directory: str) -> np.ndarray:
  """The cached fixed targets ``T_fix`` over the training split."""
  path = os.path.join(directory, _TARGETS)
  if not os.path.isfile(path):
    raise ValueError(f"teacher: no fixed-target cache {path!r}")
  return np.load(path)
