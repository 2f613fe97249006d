"""Paper 2: the fixed simplex witness, the analytic code and the escape force.

The witness ``s(mu) = softmax(beta * W mu[:K-1])`` is fixed: the rows of ``W`` (K x (K-1))
are the unit vertices of a centred regular simplex, ``W^T W = K/(K-1) I``. The analytic
code ``mu* = (K-1)/(K beta) W^T C log T`` (``C`` centres a K-vector) is the least-norm code
with ``s(mu*) = T`` exactly, with energy ``E* = mean 1/2 ||mu*||^2``; the escape force
``F(x) = -lambda_TS beta W^T (T(x) - Tbar)`` is the input-dependent part of the alignment
gradient at a collapsed code. The Paper 2 page of the docs derives them.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax import certificate


def simplex_vertices(k: int) -> np.ndarray:
  """The ``K x (K-1)`` matrix ``W`` whose rows are a centred regular simplex, unit norm.

  Built from the Helmert basis of the subspace orthogonal to ``1`` (deterministic, no
  sign ambiguity): ``W = sqrt(K/(K-1)) U`` with ``U`` orthonormal columns, ``U^T 1 = 0``.

  Raises:
    ValueError: ``k < 2``.
  """
  k = int(k)
  if k < 2:
    raise ValueError(f"k: a simplex witness needs K >= 2 classes, got {k}")
  u = np.zeros((k, k - 1))
  for j in range(1, k):  # column j-1: (1, ..., 1, -j, 0, ...) / sqrt(j (j + 1))
    u[:j, j - 1] = 1.0
    u[j, j - 1] = -float(j)
    u[:, j - 1] /= np.sqrt(j * (j + 1.0))
  return np.sqrt(k / (k - 1.0)) * u


# Full float32 matrix products: on GPUs and TPUs the default precision rounds operands
# (TF32 / bf16 passes), which moved the analytic code's softmax by 9e-4 on an H100.
_EXACT = jax.lax.Precision.HIGHEST


def witness_logits(mu: jnp.ndarray, k: int, beta: float) -> jnp.ndarray:
  """``beta * W mu[..., :K-1]``: the fixed witness's logits (pure, jit-able)."""
  w = jnp.asarray(simplex_vertices(k), mu.dtype)
  return beta * jnp.matmul(mu[..., : k - 1], w.T, precision=_EXACT)


class SimplexWitness(nn.Module):
  """The fixed raw witness as a Flax head: no trainable parameters.

  Attributes:
    num_classes: K.
    beta: the gain (paper 2's hyperparameter).
  """
  num_classes: int
  beta: float

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    if z.shape[-1] < self.num_classes - 1:
      raise ValueError(f"model.latent_dim: the simplex witness reads mu[:K-1] and needs a "
                       f"latent dimension >= K-1 = {self.num_classes - 1}, got {z.shape[-1]}")
    return witness_logits(z, self.num_classes, self.beta)


def _check_beta(beta: float) -> None:
  certificate.check_scalar("beta", beta, positive=True)


def _positive_teacher(teacher) -> np.ndarray:
  t = np.asarray(certificate.validate_simplex("teacher", teacher))
  if (t <= 0).any():
    row = int(np.argmax((t <= 0).any(axis=1)))
    raise ValueError(
        f"teacher: row {row} has a zero probability; the analytic code needs log T, which "
        "is -inf there. Smooth the teacher first (e.g. label smoothing with eps > 0).")
  return t


def analytic_code(teacher, beta: float) -> jnp.ndarray:
  """The least-norm code ``mu*(x)`` with ``s(mu*(x)) = T(x)`` exactly, shape ``(N, K-1)``.

  Args:
    teacher: ``(N, K)`` teacher rows, all entries > 0.
    beta: the witness gain.

  Raises:
    ValueError: a zero teacher entry (log 0), a bad gain, or a malformed teacher.
  """
  _check_beta(beta)
  t = _positive_teacher(teacher)
  return analytic_code_unchecked(jnp.asarray(t), beta)


def analytic_code_unchecked(t: jnp.ndarray, beta: float) -> jnp.ndarray:
  """:func:`analytic_code` without validation, for use inside jit (``t > 0`` assumed)."""
  k = t.shape[-1]
  log_t = jnp.log(t)
  centred = log_t - jnp.mean(log_t, axis=-1, keepdims=True)
  w = jnp.asarray(simplex_vertices(k), t.dtype)
  return (k - 1.0) / (k * beta) * jnp.matmul(centred, w, precision=_EXACT)


def analytic_code_energy(teacher, beta: float) -> float:
  """``E* = mean 1/2 ||mu*||^2 = (K-1)/(2 K beta^2) mean ||C log T||^2`` (closed form)."""
  _check_beta(beta)
  t = _positive_teacher(teacher).astype(np.float64)
  k = t.shape[1]
  log_t = np.log(t)
  centred = log_t - log_t.mean(axis=1, keepdims=True)
  return float((k - 1) / (2 * k * beta**2) * np.mean(np.sum(centred**2, axis=1)))


class EscapeForce(NamedTuple):
  """The input-dependent alignment force at a collapsed code.

  Attributes:
    force: ``(N, K-1)`` rows ``F(x) = -lambda_ts beta W^T (T(x) - Tbar)``.
    mean_sq_norm: ``mean ||F||^2`` computed from ``force``.
    closed_form: ``lambda_ts^2 beta^2 K/(K-1) mean ||T - Tbar||^2``.
  """
  force: np.ndarray
  mean_sq_norm: float
  closed_form: float


def escape_force(teacher, beta: float, lambda_ts: float) -> EscapeForce:
  """The escape force at a collapsed code (paper 2; our derivation, tested against autodiff)."""
  _check_beta(beta)
  certificate.check_scalar("lambda_ts", lambda_ts)
  t = np.asarray(certificate.validate_simplex("teacher", teacher), np.float64)
  k = t.shape[1]
  dev = t - t.mean(axis=0)
  force = -lambda_ts * beta * dev @ simplex_vertices(k)
  return EscapeForce(
      force=force, mean_sq_norm=float(np.mean(np.sum(force**2, axis=1))),
      closed_form=float(lambda_ts**2 * beta**2 * k / (k - 1) * np.mean(np.sum(dev**2, axis=1))))


def alignment_at_codes(teacher: jnp.ndarray, mu: jnp.ndarray, beta: float) -> jnp.ndarray:
  """``mean_i KL(T_i || s(mu_i))`` for the fixed witness (pure; used by the tests)."""
  return certificate.alignment_loss_from_logits(
      teacher, witness_logits(mu, teacher.shape[-1], beta), validate=False)
