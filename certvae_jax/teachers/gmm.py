"""The GMM teacher ``T(.|x)``: search, quality control, freezing (paper 1, section 2.2).

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

"""

from __future__ import annotations

import inspect
import itertools
import types
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from certvae_jax import certificate
from certvae_jax.configs.schema import (
  SECTIONS,
  TEACHER_SEARCH as CONFIG_FIELDS,
  pca_dims,
  teacher_features,
)

# The frozen teacher's arrays and pure functions live in certvae_jax.teachers.frozen;
# re-exported here, where they were before.
from certvae_jax.teachers.frozen import (
  FrozenGMM,
  FrozenPCA,
  freeze_sklearn_gmm,
  freeze_sklearn_pca,
  gmm_probs,
  project,
)

__all__ = ["CONFIG_FIELDS", "FIT_DEFAULTS", "FittedTeacher", "feasibility", "fit_teacher",
           "frozen", "score_teacher", "search_teacher"]


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


class FittedTeacher(NamedTuple):
  """A GMM teacher selected on features, with its quality-control table.

  Attributes:
    gmm: the selected mixture, frozen as arrays.
    candidates: one dict per grid point (settings, scores, feasibility, reason).
    selected: index of the selected candidate in ``candidates``.
    stress_case: no candidate was feasible; the selection is the best infeasible one
      (report such runs apart, never pooled; paper 1, appendix E.5).
    projection: the frozen PCA the GMM was fitted after (``features='pca:N'``), or None.
  """
  gmm: FrozenGMM
  candidates: list[dict[str, Any]]
  selected: int
  stress_case: bool
  projection: FrozenPCA | None = None

  @property
  def scores(self) -> dict[str, float]:
    """The selected candidate's QC scores (``teacher_mi``, ``mean_margin``, ...)."""
    return self.candidates[self.selected]["scores"]

  def probs(self, features: jnp.ndarray) -> jnp.ndarray:
    """``T = p(k | P(features))``, ``(N, K)``, with ``P`` the frozen PCA if any: pure and
    jit-able (equal to ``PCA.transform`` then ``predict_proba``)."""
    return gmm_probs(self.gmm, project(self.projection, features))


def _as_tuple(value: Any) -> Any:
  return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def fit_teacher(features: Any, *, num_components: Any = (10,),
                covariance_types: Any = ("full", "diag"), seeds: Any = (0, 1, 2),
                max_iter: int = 200, reg_covar: float = 1e-6, high_margin: float = 0.5,
                min_mass: float = 0.02, min_mi: float = 0.1, min_mean_margin: float = 0.0,
                max_hard_balance_kl: float = 0.5, max_soft_usage_kl: float = 0.5,
                feature_space: str = "mu", **unknown: Any) -> FittedTeacher:
  """Fits the candidate GMMs on ``features`` and selects the teacher (paper 1, section 2.2).

  Every grid point (components x covariance type x seed) is fitted with scikit-learn's
  ``GaussianMixture`` on the host and scored; the feasible candidates (thresholds
  checked minimum mass first) compete on ``I_T`` (ties: mean margin). With none
  feasible the best one is kept and ``stress_case`` is set: never an error.

  Args:
    features: ``(N, d)`` features, e.g. your warm-up encoder's means on the training set.
    num_components: K, or several to search over.
    covariance_types: of ``'full'``, ``'diag'``, ``'tied'``, ``'spherical'``.
    seeds: GMM initialisation seeds.
    max_iter: EM iterations per fit.
    reg_covar: added to the covariance diagonals.
    high_margin: top-1 margin ``p1 - p2`` counted as "high" in the QC table.
    min_mass: feasibility: every component's mean mass ``min_k Tbar_k`` at least this.
    min_mi: feasibility: ``I_T`` at least this (nats).
    min_mean_margin: feasibility: mean top-1 margin at least this.
    max_hard_balance_kl: feasibility: ``KL(hist(argmax T) || U)`` at most this.
    max_soft_usage_kl: feasibility: ``KL(Tbar || U)`` at most this.
    feature_space: ``'mu'`` fits the GMMs on ``features`` as given; ``'pca:N'`` first
      projects them on their ``N`` principal axes (scikit-learn's ``PCA``, fitted on the
      same features and frozen into the teacher), as paper 2's PCA-GMM teachers do.

  Returns:
    A :class:`FittedTeacher`; ``fitted.probs(features)`` is the teacher on any features.

  Raises:
    ValueError: an unknown keyword or a bad value (naming it), malformed features, or
      no candidate could be fitted at all.
  """
  if unknown:
    raise ValueError(f"fit_teacher: unknown keyword(s) {sorted(unknown)}; expected "
                     f"{sorted(FIT_DEFAULTS)}")
  options = {"num_components": _as_tuple(num_components),
             "covariance_types": _as_tuple(covariance_types), "seeds": _as_tuple(seeds),
             "max_iter": max_iter, "reg_covar": reg_covar, "high_margin": high_margin,
             "min_mass": min_mass, "min_mi": min_mi, "min_mean_margin": min_mean_margin,
             "max_hard_balance_kl": max_hard_balance_kl, "max_soft_usage_kl": max_soft_usage_kl,
             "feature_space": feature_space}
  for name, field in CONFIG_FIELDS.items():
    if name != "feature_space":  # the features are given: 'mu' or 'pca:N', not 'input_pca:N'
      SECTIONS["teacher"][field](name, options[name])
  pca_dims(feature_space, "feature_space")
  return _search(features, types.SimpleNamespace(**options))


# fit_teacher's keyword defaults (equal to config.teacher's defaults; a test checks).
FIT_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(fit_teacher).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY}


def search_teacher(features: np.ndarray, config: Any) -> FittedTeacher:
  """:func:`fit_teacher` with the settings of ``config.teacher``.

  Fields missing from ``config`` take :data:`FIT_DEFAULTS`. ``features='input_pca:N'``
  searches the given features (the inputs) in the space ``'pca:N'``.
  """
  kwargs = {param: getattr(config, field) for param, field in CONFIG_FIELDS.items()
            if hasattr(config, field)}
  if "feature_space" in kwargs:
    kwargs["feature_space"] = teacher_features(kwargs["feature_space"])[1]
  return fit_teacher(features, **kwargs)


def frozen(encoder_fn: Callable[[Any], Any], fitted: FittedTeacher) -> Callable[[Any], Any]:
  """``T(x) = gmm(encoder_fn(x))``: the teacher as a pure function of the input.

  Args:
    encoder_fn: any JAX callable from a batch of inputs to the ``(N, d)`` features the
      teacher was fitted on (a Linen ``apply`` with frozen parameters, an NNX module, a
      plain function). If it returns a tuple, such as ``(mu, logvar)``, the first
      element is used.
    fitted: from :func:`fit_teacher`.

  Returns:
    ``teacher_fn(x) -> (N, K)`` rows on the simplex; jit-able.
  """
  if not callable(encoder_fn):
    raise ValueError(f"encoder_fn: expected a callable from inputs to features, got "
                     f"{type(encoder_fn).__name__}")
  if not isinstance(fitted, FittedTeacher):
    raise ValueError(f"fitted: expected the FittedTeacher of fit_teacher, got "
                     f"{type(fitted).__name__}")

  def teacher_fn(x):
    features = encoder_fn(x)
    if isinstance(features, (tuple, list)):
      features = features[0]
    return fitted.probs(features)
  return teacher_fn


def _check_features(features: Any, components: Sequence[int]) -> np.ndarray:
  # float64: scikit-learn fits ~2x faster (float32 responsibilities underflow to denormals).
  try:
    f = np.asarray(features, np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"features: expected a numeric (N, d) array ({e})") from e
  if f.ndim != 2 or len(f) < 2 or f.shape[1] < 1:
    raise ValueError(f"features: expected shape (N >= 2, d >= 1), got {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("features: contain NaN or inf (did warm-up diverge?)")
  distinct = len(np.unique(f, axis=0))
  for k in components:
    if int(k) > len(f):
      raise ValueError(f"teacher.components: K={k} exceeds the number of training points "
                       f"N={len(f)}")
    if int(k) > distinct:
      raise ValueError(f"teacher.components: K={k} exceeds the {distinct} distinct feature "
                       "points (collapsed warm-up encoder?)")
  return f


def _search(features: Any, o: Any) -> FittedTeacher:
  """The grid search behind :func:`fit_teacher` (``o`` holds its checked options)."""
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=import-outside-toplevel
  from sklearn.mixture import GaussianMixture  # pylint: disable=import-outside-toplevel

  f = _check_features(features, o.num_components)
  f, projection = _project(f, pca_dims(o.feature_space))
  candidates, fitted = [], []
  for k, ct, seed in itertools.product(o.num_components, o.covariance_types, o.seeds):
    row = {"components": int(k), "covariance_type": ct, "seed": int(seed)}
    gm = GaussianMixture(n_components=int(k), covariance_type=ct, random_state=int(seed),
                         max_iter=int(o.max_iter), reg_covar=float(o.reg_covar))
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(f)
    except (ValueError, np.linalg.LinAlgError) as e:
      row.update(fitted=False, feasible=False, reason=f"fit failed: {e}")
      candidates.append(row)
      fitted.append(None)
      continue
    row.update(scores=score_teacher(gm.predict_proba(f), o.high_margin),
               converged=bool(gm.converged_), fitted=True)
    row["feasible"], row["reason"] = feasibility(row["scores"], o)
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
  return FittedTeacher(gmm=freeze_sklearn_gmm(fitted[best]), candidates=candidates,
                       selected=best, stress_case=not feasible, projection=projection)


def _project(f: np.ndarray, dims: int | None) -> tuple[np.ndarray, FrozenPCA | None]:
  """``f`` unchanged, or its PCA projection on ``dims`` axes and the frozen PCA."""
  if dims is None:
    return f, None
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  if dims > min(f.shape):
    raise ValueError(f"feature_space: pca:{dims} needs N <= min(number of points, feature "
                     f"dimension) = {min(f.shape)}")
  pca = PCA(n_components=dims, svd_solver="full").fit(f)
  return pca.transform(f), freeze_sklearn_pca(pca)
