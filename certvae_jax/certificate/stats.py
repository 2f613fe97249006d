"""Mergeable one-pass statistics of the certificate (our resolution, for data at scale).

Every certificate quantity is a function of six sums over the rows (``n``, ``sum T``,
``sum T log T``, ``sum T log s``, ``sum s``, ``sum s log s``). They are accumulated per
batch, merged across batches, devices and hosts by addition, and finished once:
memory ``O(K)`` whatever ``N`` is.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from certvae_jax.certificate.validation import Array, check_tau, is_int, is_traced, validate_pair
from certvae_jax.certificate.verdict import DEFAULT_TAU, CertificateReport, any_traced, certified


class CertificateStats(NamedTuple):
  """Six sums from which every certificate quantity follows.

  ``I_T = mean(T log T) - Tbar . log Tbar``, ``L_TS = mean(T log T) - mean(T log s)``,
  ``I_S = mean(s log s) - sbar . log sbar``. Sums merge across batches, devices and
  hosts by addition, so memory is ``O(K)`` whatever ``N`` is.

  Use ``CertificateStats.zeros(k)`` for a float64 accumulator on the host, then
  ``stats = stats.update(teacher_batch, student_batch)`` per batch (each batch's
  sums are computed by a jitted kernel in the batch's dtype and added in float64),
  ``stats.merge(other)`` to combine, and ``stats.finalize(tau)`` for the report.
  Inside jit (e.g. per device under ``shard_map``), :func:`batch_stats` gives one
  batch's sums; reduce them with ``jax.lax.psum`` and add them on the host.
  """
  n: Any
  sum_t: Any
  sum_t_log_t: Any
  sum_t_log_s: Any
  sum_s: Any
  sum_s_log_s: Any

  @classmethod
  def zeros(cls, k: int) -> "CertificateStats":
    """An empty float64 host accumulator for ``k`` classes."""
    if not is_int(k) or k < 2:
      raise ValueError(f"k: expected an integer number of classes >= 2, got {k!r}")
    z = np.zeros((), np.float64)
    return cls(np.zeros((), np.int64), np.zeros(int(k)), z, z.copy(), np.zeros(int(k)), z.copy())

  @property
  def k(self) -> int:
    return int(np.shape(self.sum_t)[-1])

  def update(self, teacher: Array, student: Array, *, from_logits: bool = False,
             validate: bool = True) -> "CertificateStats":
    """Adds one batch: ``student`` holds probability rows, or logits when
    ``from_logits=True`` (default False, as everywhere in the certificate)."""
    if validate:
      teacher, student = validate_pair(teacher, student, from_logits)
      if not is_traced(teacher) and np.shape(teacher)[1] != self.k:
        raise ValueError(f"teacher: expected K={self.k} columns, got {np.shape(teacher)[1]}")
    return self.merge(batch_stats(teacher, student, from_logits=from_logits))

  def merge(self, other: "CertificateStats") -> "CertificateStats":
    """Sum of two accumulators (associative and commutative)."""
    if self.k != other.k:
      raise ValueError(f"other: cannot merge stats with K={other.k} into K={self.k}")
    if all(not isinstance(x, jax.Array) for x in self):  # host accumulator: add in float64
      return CertificateStats(*(np.asarray(a) + np.asarray(jax.device_get(b), np.asarray(a).dtype)
                                for a, b in zip(self, other)))
    return CertificateStats(*(a + b for a, b in zip(self, other)))

  def finalize(self, tau: float = DEFAULT_TAU) -> CertificateReport:
    """The report, equal to :func:`report` on the concatenated batches (Python numbers
    from a host accumulator, JAX scalars from one inside traced code)."""
    check_tau(tau)
    if not is_traced(self.n) and int(np.asarray(self.n)) < 1:
      raise ValueError("stats: no rows were accumulated (n = 0)")
    xp = np if all(not isinstance(x, jax.Array) for x in self) else jnp
    n = self.n
    tbar, sbar = self.sum_t / n, self.sum_s / n
    mean_tlogt = self.sum_t_log_t / n
    i_t = mean_tlogt - xp.sum(_xlogy_any(xp, tbar, tbar))
    l_ts = mean_tlogt - self.sum_t_log_s / n
    i_s = self.sum_s_log_s / n - xp.sum(_xlogy_any(xp, sbar, sbar))
    # Float cancellation can leave -1e-16 where the exact value is 0 (constant rows).
    i_t, i_s = xp.maximum(i_t, 0.0), xp.maximum(i_s, 0.0)
    bare = i_t - l_ts
    rep = CertificateReport(n=n, k=self.k, teacher_mi=i_t, alignment=l_ts, bare_margin=bare,
                            margin=bare - tau, tau=tau, student_mi=i_s,
                            certified=certified(bare - tau, i_t))
    return rep.to_python() if xp is np and not any_traced(rep) else rep


def _xlogy_any(xp, x, y):
  if xp is np:
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(x > 0, x * np.log(np.where(x > 0, y, 1.0)), 0.0)
  return xlogy(x, y)


@functools.partial(jax.jit, static_argnames="from_logits")
def _batch_stats(t: Array, s: Array, mask: Array | None, from_logits: bool) -> CertificateStats:
  if from_logits:
    log_s = jax.nn.log_softmax(s, axis=-1)
    s = jnp.exp(log_s)
    t_log_s = jnp.sum(jnp.where(t > 0, t * log_s, 0.0), axis=-1)
  else:
    t_log_s = jnp.sum(xlogy(t, s), axis=-1)
  if mask is None:
    mask = jnp.ones(t.shape[:1], bool)
  # where, not multiply: a padded row may hold -inf log-probabilities.
  keep = lambda v: jnp.where(mask.reshape(mask.shape + (1,) * (v.ndim - 1)), v, 0.0)
  return CertificateStats(
      n=jnp.sum(mask.astype(jnp.int32)), sum_t=jnp.sum(keep(t), axis=0),
      sum_t_log_t=jnp.sum(keep(jnp.sum(xlogy(t, t), axis=-1))),
      sum_t_log_s=jnp.sum(keep(t_log_s)), sum_s=jnp.sum(keep(s), axis=0),
      sum_s_log_s=jnp.sum(keep(jnp.sum(xlogy(s, s), axis=-1))))


def batch_stats(teacher: Array, student: Array, *, from_logits: bool = False,
                mask: Array | None = None) -> CertificateStats:
  """One batch's sums (pure and jit-able; no validation).

  Args:
    teacher: ``(B, K)`` teacher rows.
    student: ``(B, K)`` witness rows, or logits when ``from_logits``.
    from_logits: take ``log s`` from ``log_softmax`` (stable).
    mask: optional ``(B,)`` booleans; rows where it is False (padding) are left out,
      so batches padded to one shape compile once.
  """
  m = None if mask is None else jnp.asarray(mask, bool)
  return _batch_stats(jnp.asarray(teacher), jnp.asarray(student), m, from_logits)
