"""The constant-collapse certificate: pure functions on probability arrays.

Paper 1 ("A Testable Certificate for Constant Collapse in Teacher-Guided VAEs",
section 2.3) fixes a teacher ``T(.|x)`` on the simplex and a raw witness ``s(z)``
that sees only the latent code. With ``Tbar = mean_i T_i``:

* teacher mutual information ``I_T = mean_i KL(T_i || Tbar)``;
* raw alignment ``L_TS = mean_i KL(T_i || s_i)``;
* Lemma 1 (exact): ``mean_i KL(T_i || c) = I_T + KL(Tbar || c)`` for every constant
  ``c`` in the simplex, so the best constant student costs exactly ``I_T``;
* Theorem 1: ``L_TS < I_T`` proves ``s`` (hence the code) is not constant. The
  practical margin is ``G_tau = I_T - tau - L_TS``; certified iff ``G_tau > 0``.

All quantities are in nats, with ``0 log 0 = 0``. A zero student probability where
the teacher is positive gives ``+inf`` alignment (never NaN).

Every function accepts NumPy or JAX arrays of shape ``(N, K)`` and works under
``jax.jit``. Outside traced code the inputs are validated (see
:func:`validate_simplex`); inside ``jit`` validation is skipped because the
values are not known at trace time.

For data that does not fit in memory, or that lives on many devices and hosts,
:class:`CertificateStats` accumulates six mergeable sums (our one-pass form of paper 1, section 2.3) from
which every quantity above follows; merging is a plain sum.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from certvae_jax.validation import (DEFAULT_ROW_ATOL, Array, check_pair, check_scalar,
                                    check_tau, is_traced, validate_logits, validate_pair,
                                    validate_simplex)

__all__ = ["CertificateReport", "CertificateStats", "alignment_loss",
           "alignment_loss_from_logits", "batch_stats", "certify", "check_scalar",
           "constant_student_cost", "margin", "report", "student_mi", "teacher_mi",
           "valid_inputs", "validate_simplex"]

DEFAULT_TAU = 0.05
TAU_SENSITIVITY = (0.0, 0.05, 0.15)  # paper 1, appendix B
# A margin this close to zero (relative to 1 + I_T) is within float32 rounding of the
# sums and is not counted as a certificate: with tau = 0 and the student exactly Tbar,
# rounding alone can give G = +2e-16.
CERTIFY_SLACK = 1e-5


# ---------------------------------------------------------------------------
# Jitted cores (no validation). Each reduces over rows with a mean.
# ---------------------------------------------------------------------------


def _neg_entropy_rows(p: Array) -> Array:
  return jnp.sum(xlogy(p, p), axis=-1)


def _kl_rows(t: Array, s: Array) -> Array:
  # xlogy(t, s) is -inf where t > 0 and s == 0, giving KL = +inf, never NaN.
  return _neg_entropy_rows(t) - jnp.sum(xlogy(t, s), axis=-1)


@jax.jit
def _teacher_mi(t: Array) -> Array:
  tbar = jnp.mean(t, axis=0)
  return jnp.mean(_kl_rows(t, tbar[None, :]))


@jax.jit
def _alignment(t: Array, s: Array) -> Array:
  return jnp.mean(_kl_rows(t, s))


@jax.jit
def _alignment_from_logits(t: Array, logits: Array) -> Array:
  log_s = jax.nn.log_softmax(logits, axis=-1)
  cross = jnp.sum(jnp.where(t > 0, t * log_s, 0.0), axis=-1)
  return jnp.mean(_neg_entropy_rows(t) - cross)


# ---------------------------------------------------------------------------
# Public scalar functions.
# ---------------------------------------------------------------------------


def teacher_mi(teacher: Array, *, validate: bool = True) -> Array:
  """Teacher mutual information ``I_T = mean_i KL(T_i || Tbar)`` (paper 1, eq. 2).

  Args:
    teacher: ``(N, K)`` teacher rows on the simplex.
    validate: check the input (skipped automatically under jit).

  Returns:
    A scalar: the cost of the best constant student (Lemma 1).
  """
  if validate:
    teacher = validate_simplex("teacher", teacher)
  return _teacher_mi(jnp.asarray(teacher))


def student_mi(student: Array, *, validate: bool = True) -> Array:
  """Student mutual information ``I_S = mean_i KL(s_i || sbar)``.

  A diagnostic only (paper 1, section 4): it is zero iff the witness is constant
  on the evaluation set, but it is not the certificate.
  """
  if validate:
    student = validate_simplex("student", student)
  return _teacher_mi(jnp.asarray(student))


def alignment_loss(teacher: Array, student: Array, *, validate: bool = True) -> Array:
  """Raw alignment ``L_TS = mean_i KL(T_i || s_i)`` (paper 1, section 2.3).

  Args:
    teacher: ``(N, K)`` teacher rows.
    student: ``(N, K)`` raw z-only witness rows ``s(mu(x_i))``.
    validate: check the inputs (skipped automatically under jit).

  Returns:
    A scalar in ``[0, inf]``; ``inf`` where the student puts zero mass on a class
    the teacher supports.
  """
  if validate:
    teacher = validate_simplex("teacher", teacher)
    student = validate_simplex("student", student)
    check_pair(teacher, student)
  return _alignment(jnp.asarray(teacher), jnp.asarray(student))


def alignment_loss_from_logits(
    teacher: Array, student_logits: Array, *, validate: bool = True) -> Array:
  """``L_TS`` from the witness's logits, computed stably with ``log_softmax``.

  Prefer this in training and evaluation: it never takes ``log`` of an underflowed
  probability.
  """
  if validate:
    teacher = validate_simplex("teacher", teacher)
    validate_logits("student_logits", student_logits)
    check_pair(teacher, student_logits, "student_logits")
  return _alignment_from_logits(jnp.asarray(teacher), jnp.asarray(student_logits))


def constant_student_cost(teacher: Array, c: Array, *, validate: bool = True) -> Array:
  """Left side of Lemma 1: ``mean_i KL(T_i || c)`` for a constant student ``c``.

  Lemma 1 (paper 1, section 2.3) states it equals ``I_T + KL(Tbar || c)``.

  Args:
    teacher: ``(N, K)`` teacher rows.
    c: ``(K,)`` a single point of the simplex, used for every row.
    validate: check the inputs (skipped automatically under jit).
  """
  if validate:
    teacher = validate_simplex("teacher", teacher)
    if not is_traced(c):
      if np.ndim(c) != 1 or np.shape(c)[0] != np.shape(teacher)[1]:
        raise ValueError(
            f"c: expected shape ({np.shape(teacher)[1]},) to match teacher's K, "
            f"got {np.shape(c)}")
      validate_simplex("c", np.asarray(c)[None, :])
  t = jnp.asarray(teacher)
  return _alignment(t, jnp.broadcast_to(jnp.asarray(c), t.shape))


def _student_terms(teacher: Array, student: Array, from_logits: bool, validate: bool):
  """Validated ``(t, s, L_TS)`` for a student given as probabilities or logits."""
  if validate:
    teacher, student = validate_pair(teacher, student, from_logits)
  t, s = jnp.asarray(teacher), jnp.asarray(student)
  if from_logits:
    return t, jax.nn.softmax(s, axis=-1), _alignment_from_logits(t, s)
  return t, s, _alignment(t, s)


def margin(teacher: Array, student: Array, tau: float = DEFAULT_TAU, *,
           from_logits: bool = False, validate: bool = True) -> Array:
  """Practical margin ``G_tau = I_T - tau - L_TS`` (paper 1, section 2.3).

  ``G_tau > 0`` certifies that the raw witness, hence the latent code it reads,
  is not constant in the input. A negative margin proves nothing.

  Args:
    teacher: ``(N, K)`` teacher rows.
    student: ``(N, K)`` raw z-only witness rows, or its logits with ``from_logits``.
    tau: safety buffer (nats), 0.05 in the paper.
    from_logits: ``student`` holds logits (``L_TS`` from ``log_softmax``, stable).
    validate: check the inputs (skipped automatically under jit).

  Returns:
    A 0-d JAX array (so that it composes inside traced code); ``float(...)`` it outside.
  """
  if validate:
    check_tau(tau)
  t, _, l_ts = _student_terms(teacher, student, from_logits, validate)
  return _teacher_mi(t) - tau - l_ts


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


class CertificateReport(NamedTuple):
  """The certificate of one evaluation set (a pytree: works as a jit output).

  Attributes:
    n: number of rows evaluated.
    k: number of classes.
    teacher_mi: ``I_T``, the best constant student's cost.
    alignment: ``L_TS`` of the raw witness.
    bare_margin: ``G = I_T - L_TS``.
    margin: ``G_tau = I_T - tau - L_TS``.
    tau: the safety buffer used.
    student_mi: ``I_S`` (diagnostic).
    certified: ``margin > CERTIFY_SLACK * (1 + teacher_mi)``, i.e. ``G_tau > 0``
      beyond float32 rounding.
  """
  n: Any
  k: Any
  teacher_mi: Any
  alignment: Any
  bare_margin: Any
  margin: Any
  tau: Any
  student_mi: Any
  certified: Any

  def margins(self, taus: Sequence[float] = TAU_SENSITIVITY) -> dict[float, float]:
    """``G_tau`` for several ``tau`` without retraining (paper 1, appendix B)."""
    return {float(t): float(self.bare_margin) - float(t) for t in taus}

  @property
  def certifiable(self) -> bool:
    """Whether any witness could certify: needs ``I_T > tau`` (``G_tau <= I_T - tau``)."""
    return float(self.teacher_mi) > float(self.tau)

  def to_python(self) -> "CertificateReport":
    """The same report with plain Python numbers (``int``, ``float``, ``bool``)."""
    return CertificateReport(*(_to_py(v) for v in self))

  def to_dict(self, taus: Sequence[float] = TAU_SENSITIVITY) -> dict[str, Any]:
    """Plain Python numbers for JSON, with the tau-sensitivity margins."""
    out = {f: _to_py(getattr(self, f)) for f in self._fields}
    out["tau_sensitivity"] = {f"{t:g}": m for t, m in self.margins(taus).items()}
    return out

  def summary_line(self) -> str:
    """One line such as ``certified: G_tau=+0.62 (I_T=1.90, L_TS=1.23, tau=0.05)``."""
    verdict = "certified" if bool(self.certified) else "not certified"
    line = (f"{verdict}: G_tau={float(self.margin):+.2f} (I_T={float(self.teacher_mi):.2f}, "
            f"L_TS={float(self.alignment):.2f}, tau={float(self.tau):.2f})")
    if not self.certifiable:
      line += " [teacher MI <= tau: no positive certificate is possible with this teacher]"
    return line


def _to_py(v: Any) -> Any:
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  return float(v)


def report(teacher: Array, student: Array, tau: float = DEFAULT_TAU, *,
           from_logits: bool = False, validate: bool = True,
           checked: bool = False) -> CertificateReport:
  """All certificate quantities of one evaluation set at once.

  Args:
    teacher: ``(N, K)`` teacher rows.
    student: ``(N, K)`` raw z-only witness rows at the encoder mean, or its logits with
      ``from_logits``.
    tau: safety buffer for ``margin`` and ``certified``.
    from_logits: ``student`` holds logits.
    validate: check the inputs (skipped automatically under jit).
    checked: inside jit, where the inputs cannot be validated, turn every quantity of
      a report whose rows are invalid (see :func:`valid_inputs`) into NaN and
      ``certified`` into False, so that bad rows can never pass as a certificate.

  Returns:
    A :class:`CertificateReport`: Python numbers (``int`` / ``float`` / ``bool``) when
    called outside traced code, JAX scalars inside it. A constant teacher
    (``I_T = 0``) is legal; its report has ``certifiable == False``.
  """
  if validate:
    check_tau(tau)
  t, s, l_ts = _student_terms(teacher, student, from_logits, validate)
  i_t = _teacher_mi(t)
  bare = i_t - l_ts
  n, k = t.shape
  rep = CertificateReport(
      n=n, k=k, teacher_mi=i_t, alignment=l_ts, bare_margin=bare, margin=bare - tau,
      tau=tau, student_mi=_teacher_mi(s), certified=_certified(bare - tau, i_t))
  if checked:
    rep = _poison_unless(valid_inputs(teacher, student, from_logits=from_logits), rep)
  return rep if _traced_any(rep) else rep.to_python()


def valid_inputs(teacher: Array, student: Array, *, from_logits: bool = False,
                 atol: float = DEFAULT_ROW_ATOL) -> Array:
  """Whether the certificate's inputs are valid, as a jit-able boolean scalar.

  Teacher rows (and student rows, unless ``from_logits``) must be finite, non-negative
  and sum to 1 within ``atol``; logits must be finite. Inside jit, where
  :func:`validate_simplex` cannot run, use it with ``jax.experimental.checkify`` or
  :func:`report`'s ``checked=True``.
  """
  def rows_ok(p):
    p = jnp.asarray(p)
    return jnp.all(jnp.isfinite(p) & (p >= 0)) & jnp.all(jnp.abs(jnp.sum(p, -1) - 1) <= atol)
  student_ok = jnp.all(jnp.isfinite(jnp.asarray(student))) if from_logits else rows_ok(student)
  return rows_ok(teacher) & student_ok


def _poison_unless(ok: Array, rep: CertificateReport) -> CertificateReport:
  nan = lambda v: jnp.where(ok, v, jnp.nan)  # noqa: E731
  return rep._replace(teacher_mi=nan(rep.teacher_mi), alignment=nan(rep.alignment),
                      bare_margin=nan(rep.bare_margin), margin=nan(rep.margin),
                      student_mi=nan(rep.student_mi), certified=ok & rep.certified)


def _traced_any(rep: CertificateReport) -> bool:
  return any(is_traced(v) for v in rep)


def certify(witness_fn: Callable[[Any], Array], teacher_fn: Callable[[Any], Array],
            batches: Iterable[Any], tau: float = DEFAULT_TAU, *, from_logits: bool = True,
            validate: bool = True) -> CertificateReport:
  """The certificate of a whole data set, streamed batch by batch (paper 1, section 2.3).

  Args:
    witness_fn: ``x -> (B, K)`` the raw z-only witness at the encoder mean,
      ``s(mu(x))``: logits by default, probabilities with ``from_logits=False``. It
      must read the input only through the latent code, or the certificate says
      nothing about the code.
    teacher_fn: ``x -> (B, K)`` teacher rows on the simplex.
    batches: any iterable of input batches (NumPy or JAX arrays, sharded or not).
    tau: the safety buffer.
    from_logits: what ``witness_fn`` returns.
    validate: check each batch's rows (fully addressable arrays only).

  Returns:
    The :class:`CertificateReport` (Python numbers), equal to :func:`report` on the
    concatenated rows; memory is ``O(K)`` whatever the number of batches.

  Raises:
    ValueError: an empty ``batches``, or invalid rows in a batch (naming it).
  """
  check_tau(tau)
  stats = None
  for i, x in enumerate(batches):
    t, s = teacher_fn(x), witness_fn(x)
    check = validate and all(getattr(a, "is_fully_addressable", True) for a in (t, s))
    if stats is None:
      stats = CertificateStats.zeros(int(np.shape(t)[-1]))
    try:
      stats = stats.update(t, s, from_logits=from_logits, validate=check)
    except ValueError as e:
      raise ValueError(f"batches: batch {i}: {e}") from e
  if stats is None:
    raise ValueError("batches: no batch was given")
  return stats.finalize(tau)


# ---------------------------------------------------------------------------
# Mergeable one-pass statistics (our resolution, for data that does not fit in memory).
# ---------------------------------------------------------------------------


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
    if int(k) < 2:
      raise ValueError(f"k: needs at least two classes, got {k}")
    z = np.zeros((), np.float64)
    return cls(np.zeros((), np.int64), np.zeros(int(k)), z, z.copy(), np.zeros(int(k)), z.copy())

  @property
  def k(self) -> int:
    return int(np.shape(self.sum_t)[-1])

  def update(self, teacher: Array, student: Array, *, from_logits: bool = False,
             validate: bool = True) -> "CertificateStats":
    """Adds one batch. ``student`` may be logits when ``from_logits=True``."""
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
                            certified=_certified(bare - tau, i_t))
    return rep.to_python() if xp is np and not _traced_any(rep) else rep


def _certified(g_tau: Any, i_t: Any) -> Any:
  return g_tau > CERTIFY_SLACK * (1.0 + i_t)


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
