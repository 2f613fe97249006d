"""Population lower bounds on the certificate margin at confidence ``1 - delta``.

The sample margin is exact for the evaluation rows (Lemma 1 holds for the empirical
distribution); these bound the margin of the data distribution, for held-out rows drawn
independently of the teacher and the witness (paper 1, section 2.3 and appendix B use a
fixed buffer ``tau`` instead). Two bounds: a percentile **bootstrap** (approximate) and a
**distribution-free** one for the floored witness ``s' = (1 - K eta) s + eta`` (exact at
its level). Their derivation is in the documentation (docs/certificate.md, "Derivation of
the bounds").
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from certvae_jax.certificate.validation import (
  check_tau,
  is_number,
  open_unit_interval,
  positive_int,
  validate_pair,
)
from certvae_jax.certificate.verdict import DEFAULT_TAU

DEFAULT_DELTA = 0.05
DEFAULT_RESAMPLES = 1000
FLOOR_BUDGET = 0.01  # default floor: eta = FLOOR_BUDGET / K, so L_TS rises by <= 0.01 nats
_RESAMPLE_BATCH = 64  # resamples computed at once (memory: 64 x n counts)


class MarginBounds(NamedTuple):
  """Lower confidence bounds on the population margin ``G_tau`` (all in nats).

  Attributes:
    sample: ``G_tau`` on these rows, exact for their empirical distribution.
    bootstrap: one-sided percentile-bootstrap lower bound on the population ``G_tau``
      at level ``1 - delta`` (approximate coverage).
    distribution_free: lower bound on the population ``G_tau`` of the floored witness
      ``(1 - K eta) s + eta`` at level ``1 - delta``, valid for any distribution of
      i.i.d. rows.
    floored_sample: ``G_tau`` of the floored witness on these rows.
    n: number of rows.
    delta: the miss probability of each bound.
    tau: the safety buffer.
    num_resamples: bootstrap resamples drawn.
    student_floor: ``eta``, the floor of the distribution-free bound.
  """
  sample: float
  bootstrap: float
  distribution_free: float
  floored_sample: float
  n: int
  delta: float
  tau: float
  num_resamples: int
  student_floor: float

  def to_dict(self) -> dict[str, float | int]:
    return {f: getattr(self, f) for f in self._fields}


def _entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(xlogy(p, p), axis=-1)


@jax.jit
def _cross_entropies(t: jax.Array, log_s: jax.Array, log_floor: jax.Array) -> tuple:
  """Per-row ``CE`` of the witness and of its floored version (``log_floor = log eta``)."""
  k = t.shape[-1]
  ce = -jnp.sum(jnp.where(t > 0, t * log_s, 0.0), axis=-1)
  # log((1 - K eta) s + eta), without forming s where it underflows.
  log_floored = jnp.logaddexp(jnp.log1p(-k * jnp.exp(log_floor)) + log_s, log_floor)
  ce_floored = -jnp.sum(jnp.where(t > 0, t * log_floored, 0.0), axis=-1)
  return ce, ce_floored


@functools.partial(jax.jit, static_argnums=3)
def _bootstrap_margins(key: jax.Array, t: jax.Array, ce: jax.Array, num: int) -> jax.Array:
  """``G`` (no tau) on ``num`` resamples of the rows: ``H(Tbar*) - mean CE*``."""
  n = t.shape[0]

  def one(k):
    counts = jnp.zeros(n, t.dtype).at[jax.random.randint(k, (n,), 0, n)].add(1.0)
    return _entropy(counts @ t / n) - counts @ ce / n

  return jax.lax.map(one, jax.random.split(key, num), batch_size=_RESAMPLE_BATCH)



def _binary_entropy(p: float) -> float:
  return 0.0 if p <= 0.0 or p >= 1.0 else -p * math.log(p) - (1 - p) * math.log1p(-p)


def entropy_deviation(n: int, k: int, delta: float) -> float:
  """McDiarmid's one-sided deviation of ``H(Tbar_hat)`` at level ``delta`` (nats).

  Replacing one of ``n`` rows changes ``H(Tbar_hat)`` by at most
  ``c = log(K - 1)/n + h(1/n)``; so ``H(Tbar_hat) - E[H(Tbar_hat)] <= c sqrt(n log(1/delta)/2)``
  with probability at least ``1 - delta``.
  """
  c = math.log(max(k - 1, 1)) / n + _binary_entropy(1.0 / n)
  return c * math.sqrt(n * math.log(1.0 / delta) / 2.0)


def mean_upper_bound(values: np.ndarray, value_range: float, delta: float) -> float:
  """Upper confidence bound on ``E[X]`` for i.i.d. ``X`` in ``[0, value_range]``.

  The smaller of Hoeffding's bound and the empirical Bernstein bound (Maurer and
  Pontil 2009, theorem 4), each at ``delta / 2``: valid at level ``1 - delta``.
  """
  x = np.asarray(values, np.float64)
  n = len(x)
  mean = float(x.mean())
  log_term = math.log(4.0 / delta)  # Maurer and Pontil's ln(2 / delta') at delta' = delta / 2
  hoeffding = mean + value_range * math.sqrt(math.log(2.0 / delta) / (2.0 * n))
  variance = float(x.var(ddof=1))
  bernstein = (mean + math.sqrt(2.0 * variance * log_term / n)
               + 7.0 * value_range * log_term / (3.0 * (n - 1)))
  return min(hoeffding, bernstein)


def margin_bounds(teacher, student, *, tau: float = DEFAULT_TAU, delta: float = DEFAULT_DELTA,
                  num_resamples: int = DEFAULT_RESAMPLES, key: jax.Array | None = None,
                  student_floor: float | None = None, from_logits: bool = False
                  ) -> MarginBounds:
  """Lower confidence bounds on the population margin ``G_tau`` (see the module doc).

  Args:
    teacher: ``(N, K)`` teacher rows on the simplex.
    student: ``(N, K)`` raw z-only witness rows, or its logits with ``from_logits``.
    tau: the safety buffer (nats).
    delta: each bound misses the population margin with probability at most ``delta``
      (the bootstrap's only approximately); in ``(0, 1)``.
    num_resamples: bootstrap resamples (at least 1).
    key: the bootstrap's PRNG key; ``None`` uses ``jax.random.PRNGKey(0)``, so the same
      rows give the same bound.
    student_floor: ``eta`` of the floored witness, in ``(0, 1/K)``; ``None`` picks
      ``0.01 / K``, which raises ``L_TS`` by at most ``-log(0.99) = 0.01`` nats.
    from_logits: ``student`` holds logits (default False: probability rows).

  Returns:
    A :class:`MarginBounds` of Python numbers.

  Raises:
    ValueError: invalid rows (as :func:`certvae_jax.certificate.report`) or arguments.
  """
  check_tau(tau)
  open_unit_interval("delta", delta)
  positive_int("num_resamples", num_resamples)
  teacher, student = validate_pair(teacher, student, from_logits)
  t = jnp.asarray(teacher, jnp.float32)
  n, k = t.shape
  if n < 2:
    raise ValueError(f"teacher: population bounds need at least two rows (a bootstrap and "
                     f"a concentration bound of one row say nothing), got {n}")
  if key is not None and not (isinstance(key, jax.Array) and (
      jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,))):
    raise ValueError(f"key: expected a JAX PRNG key (jax.random.key or PRNGKey), got "
                     f"{key!r:.60}")
  eta = FLOOR_BUDGET / k if student_floor is None else student_floor
  if not is_number(eta) or not 0.0 < eta < 1.0 / k:
    raise ValueError(f"student_floor: expected a number in (0, 1/K) = (0, {1.0 / k:.6g}), "
                     f"got {eta!r}")
  s = jnp.asarray(student, jnp.float32)
  log_s = jax.nn.log_softmax(s, axis=-1) if from_logits else jnp.log(s)
  ce, ce_floored = jax.device_get(_cross_entropies(t, log_s, jnp.log(jnp.float32(eta))))
  t64 = np.asarray(teacher, np.float64)
  entropy = float(-np.sum(_xlogx(t64.mean(0))))
  sample = entropy - float(np.mean(ce, dtype=np.float64)) - tau
  floored_sample = entropy - float(np.mean(ce_floored, dtype=np.float64)) - tau
  key = jax.random.PRNGKey(0) if key is None else key
  resampled = np.asarray(_bootstrap_margins(key, t, jnp.asarray(ce), int(num_resamples)))
  bootstrap = float(np.quantile(resampled.astype(np.float64), delta, method="lower")) - tau
  distribution_free = (entropy - entropy_deviation(n, k, delta / 2)
                       - mean_upper_bound(ce_floored, math.log(1.0 / eta), delta / 2) - tau)
  return MarginBounds(sample=sample, bootstrap=bootstrap, distribution_free=distribution_free,
                      floored_sample=floored_sample, n=int(n), delta=float(delta),
                      tau=float(tau), num_resamples=int(num_resamples),
                      student_floor=float(eta))


def _xlogx(p: np.ndarray) -> np.ndarray:
  return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
