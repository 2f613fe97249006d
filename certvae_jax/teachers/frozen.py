"""The frozen teacher: a fitted GMM as arrays, and ``T(x)`` as a pure function.

Paper 1, sections 2.2 and 3: the GMM fitted on the host on warm-up encoder means is
frozen beside a snapshot of the warm-up encoder, so that ``T(x)`` is a jit-able
function of any input, equal to scikit-learn's ``predict_proba`` on the same features.
The search that fits it is :mod:`certvae_jax.teachers.gmm`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax.configs.schema import COVARIANCE_TYPES


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


def gmm_logits(gmm: FrozenGMM, features: jnp.ndarray) -> jnp.ndarray:
  """``log w_k + log N(f | mean_k, Sigma_k)``, ``(N, K)``: the responsibilities' logits."""
  return _component_log_density(gmm, features) + gmm.log_weights[None, :]


def gmm_probs(gmm: FrozenGMM, features: jnp.ndarray) -> jnp.ndarray:
  """Responsibilities ``p(k | f)``, equal to ``GaussianMixture.predict_proba``.

  Args:
    gmm: the frozen mixture.
    features: ``(N, d)`` features (warm-up encoder means).

  Returns:
    ``(N, K)`` rows on the simplex.
  """
  return jax.nn.softmax(gmm_logits(gmm, features), axis=-1)


@flax.struct.dataclass
class FrozenPCA:
  """A fitted ``sklearn.decomposition.PCA`` (no whitening) as arrays.

  Attributes:
    mean: ``(d,)`` the feature mean.
    components: ``(n, d)`` the principal axes; ``project(f) = (f - mean) @ components.T``.
  """
  mean: jnp.ndarray
  components: jnp.ndarray

  def project(self, features: jnp.ndarray) -> jnp.ndarray:
    """Equal to ``PCA.transform``."""
    return jnp.matmul(features - self.mean[None, :], self.components.T, precision=_EXACT)


def freeze_sklearn_pca(pca: Any) -> FrozenPCA:
  """Turns a fitted, non-whitened ``sklearn.decomposition.PCA`` into float32 arrays."""
  if getattr(pca, "whiten", False):
    raise ValueError("pca: a whitened PCA is not supported (fit with whiten=False)")
  return FrozenPCA(mean=jnp.asarray(pca.mean_, jnp.float32),
                   components=jnp.asarray(pca.components_, jnp.float32))


def project(projection: FrozenPCA | None, features: jnp.ndarray) -> jnp.ndarray:
  """The GMM's features: ``features`` themselves, or their PCA projection."""
  return features if projection is None else projection.project(features)


@flax.struct.dataclass
class FrozenTeacher:
  """``T(x) = GMM(P(mu_warmup(x)))``: the GMM, the warm-up encoder's parameters and an
  optional frozen PCA ``P`` (paper 2's PCA-GMM teachers; identity when ``None``). With
  ``encoder_params=None`` the teacher reads the inputs themselves, ``GMM(P(x))``."""
  encoder_params: Any
  gmm: FrozenGMM
  projection: FrozenPCA | None = None

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
  return jax.nn.softmax(teacher_logits(encoder_apply, teacher, x), axis=-1)


def teacher_logits(encoder_apply: Callable[..., Any], teacher: FrozenTeacher,
                   x: jnp.ndarray) -> jnp.ndarray:
  """The logits of ``T(x)`` (``log_softmax`` of them is ``log T(x)``, never ``-inf``)."""
  if not teacher.encoder_params:  # fitted on the inputs themselves (paper 2's PCA-GMM)
    features = jnp.reshape(x, (x.shape[0], -1))
  else:
    features, _ = encoder_apply({"params": teacher.encoder_params}, x)
  return gmm_logits(teacher.gmm, project(teacher.projection, features))


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


def freeze_sklearn_gmm(gm: Any) -> FrozenGMM:
  """Turns a fitted ``sklearn.mixture.GaussianMixture`` into float32 arrays."""
  return FrozenGMM(
      log_weights=jnp.asarray(np.log(gm.weights_), jnp.float32),
      means=jnp.asarray(gm.means_, jnp.float32),
      precisions_cholesky=jnp.asarray(gm.precisions_cholesky_, jnp.float32),
      covariance_type=str(gm.covariance_type))
