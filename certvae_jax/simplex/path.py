"""Paper 2's margin–energy path: scaled analytic codes, from the constant to the teacher.

Paper 2 (v4 abstract): the analytic code's "scaled versions trace a margin-energy path
from the constant predictor to the exact teacher code, which quantifies non-collapse
inside the protected witness subspace". The formulas are ours where the abstract is
silent: the codes ``alpha * mu*(x)`` for ``alpha`` in [0, 1], scored by the fixed witness.
Since ``beta W (alpha mu*) = alpha C log T``, the witness there is the tempered teacher
``T^alpha / sum_k T^alpha``: ``alpha = 0`` is the uniform constant predictor, ``alpha = 1``
the exact code (zero alignment error). Along the path the energy is ``alpha^2 E*`` and the
alignment decreases monotonically (the log-partition of ``alpha log T`` is convex), so the
smallest ``alpha`` with a positive margin is well defined: the least latent energy with
which the witness subspace can be certified.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from certvae_jax import certificate
from certvae_jax.simplex.theory import (
  _check_beta,
  _positive_teacher,
  analytic_code_unchecked,
  witness_logits,
)


class MarginEnergyPath(NamedTuple):
  """The witness's scores at the codes ``alpha * mu*(x)`` (all in nats).

  Attributes:
    alphas: the scales, each in [0, 1].
    margin: ``G_tau`` of the fixed witness at each scale's codes.
    alignment: ``L_TS`` there.
    energy: ``mean 1/2 ||alpha mu*||^2`` (``= alpha^2 E*``).
    teacher_mi: ``I_T``.
    tau: the safety buffer.
    alpha_certified: the smallest ``alpha`` with a positive margin (bisection on the
      closed form, to 1e-9), or None when even the exact code is not certified
      (``I_T <= tau``).
    energy_certified: ``alpha_certified^2 E*``, or None.
  """
  alphas: np.ndarray
  margin: np.ndarray
  alignment: np.ndarray
  energy: np.ndarray
  teacher_mi: float
  tau: float
  alpha_certified: float | None
  energy_certified: float | None


def _scales(alphas: Sequence[float]) -> np.ndarray:
  try:
    a = np.asarray(alphas, np.float64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise ValueError(f"alphas: expected numbers in [0, 1], got {alphas!r:.60}") from e
  if a.size == 0 or not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
    raise ValueError(f"alphas: expected finite numbers in [0, 1], got {alphas!r:.60}")
  return a


def tempered_alignment(teacher: np.ndarray, alpha: float) -> float:
  """``mean_i KL(T_i || T_i^alpha / sum_k T_ik^alpha)`` in float64 (the closed form)."""
  log_t = np.log(np.asarray(teacher, np.float64))
  scaled = alpha * log_t
  top = scaled.max(axis=1, keepdims=True)
  log_z = (top + np.log(np.exp(scaled - top).sum(axis=1, keepdims=True)))[:, 0]
  t = np.exp(log_t)
  return float(np.mean((1.0 - alpha) * np.sum(t * log_t, axis=1) + log_z))


DEFAULT_ALPHAS = tuple(float(a) for a in np.linspace(0.0, 1.0, 21))


def margin_energy_path(teacher, beta: float, alphas: Sequence[float] = DEFAULT_ALPHAS,
                       tau: float = certificate.DEFAULT_TAU) -> MarginEnergyPath:
  """Scores the codes ``alpha * mu*(x)`` with the fixed simplex witness (paper 2, v4).

  Args:
    teacher: ``(N, K)`` teacher rows, all entries > 0 (the analytic code needs log T).
    beta: the witness gain.
    alphas: the scales to score, each in [0, 1].
    tau: the safety buffer.

  Returns:
    A :class:`MarginEnergyPath`; its margins and alignments are computed from the codes
    through the witness (float32), its ``alpha_certified`` from the closed form (float64).

  Raises:
    ValueError: a bad teacher, gain, scale or buffer, naming it.
  """
  _check_beta(beta)
  certificate.check_scalar("tau", tau)
  a = _scales(alphas)
  t = _positive_teacher(teacher)
  tj = jnp.asarray(t, jnp.float32)
  code = analytic_code_unchecked(tj, beta)
  k = t.shape[1]
  teacher_mi = float(certificate.teacher_mi(t))
  alignment, energy = [], []
  for alpha in a:
    codes = jnp.float32(alpha) * code
    alignment.append(float(certificate.alignment_loss_from_logits(
        tj, witness_logits(codes, k, beta), validate=False)))
    energy.append(float(0.5 * jnp.mean(jnp.sum(codes**2, axis=-1))))
  alignment_arr = np.asarray(alignment)
  alpha_min = _least_certifiable_alpha(t, teacher_mi, float(tau))
  e_star = float(0.5 * np.mean(np.sum(np.asarray(code, np.float64)**2, axis=-1)))
  return MarginEnergyPath(
      alphas=a, margin=teacher_mi - tau - alignment_arr, alignment=alignment_arr,
      energy=np.asarray(energy), teacher_mi=teacher_mi, tau=float(tau),
      alpha_certified=alpha_min,
      energy_certified=None if alpha_min is None else alpha_min**2 * e_star)


def balance_alpha(teacher, beta: float, lambda_ts: float, alpha_kl: float,
                  grid: int = 1001) -> float:
  """The scale on the path that the objective's own trade-off prefers (our resolution of
  paper 2's RST-alpha-prefit): the ``alpha`` on a grid of ``grid`` points in [0, 1] that
  minimises ``lambda_TS L(alpha) + alpha_KL alpha^2 E*``, alignment against the prior's
  energy along the path; a stronger KL weight selects a shorter code.

  Raises:
    ValueError: a teacher with a zero entry, or a bad gain or weight.
  """
  _check_beta(beta)
  certificate.check_scalar("lambda_ts", lambda_ts)
  certificate.check_scalar("alpha_kl", alpha_kl)
  t = _positive_teacher(teacher)
  log_t = np.log(np.asarray(t, np.float64))
  centred = log_t - log_t.mean(axis=1, keepdims=True)
  k = t.shape[1]
  e_star = (k - 1) / (2 * k * beta**2) * float(np.mean(np.sum(centred**2, axis=1)))
  alphas = np.linspace(0.0, 1.0, int(grid))
  cost = [lambda_ts * tempered_alignment(t, a) + alpha_kl * a * a * e_star for a in alphas]
  return float(alphas[int(np.argmin(cost))])


def witness_energy(mu, k: int) -> float:
  """``mean 1/2 ||mu[:, :K-1]||^2``: a trained code's energy in the witness subspace, the
  path's energy axis (the analytic code lives there: its energy is ``alpha^2 E*``)."""
  m = np.asarray(mu, np.float64)[:, : int(k) - 1]
  return float(0.5 * np.mean(np.sum(m**2, axis=1)))


def least_certifiable_alpha(teacher, tau: float = certificate.DEFAULT_TAU) -> float | None:
  """The smallest scale ``alpha`` whose codes ``alpha mu*`` the fixed witness certifies
  (it does not depend on ``beta``), or None when ``I_T <= tau``; to 1e-9.

  Raises:
    ValueError: a teacher with a zero entry, or a bad ``tau``.
  """
  certificate.check_scalar("tau", tau)
  t = _positive_teacher(teacher)
  return _least_certifiable_alpha(t, float(certificate.teacher_mi(t)), float(tau))


def _least_certifiable_alpha(t: np.ndarray, teacher_mi: float, tau: float) -> float | None:
  """Bisection on ``I_T - tau - L(alpha) > 0``; ``L`` decreases from ``KL(T || uniform)``
  (at least ``I_T``, by Lemma 1) at 0 to 0 at 1."""
  if not teacher_mi - tau > 0:
    return None
  lo, hi = 0.0, 1.0
  while hi - lo > 1e-9:
    mid = 0.5 * (lo + hi)
    if teacher_mi - tau - tempered_alignment(t, mid) > 0:
      hi = mid
    else:
      lo = mid
  return hi
