"""The constant-collapse certificate: pure functions on probability arrays (paper 1, §2.3).

For teacher rows ``T_i`` and raw z-only witness rows ``s_i`` (arrays ``(N, K)``, NumPy or
JAX, usable under ``jax.jit``): ``I_T = mean_i KL(T_i || Tbar)``, ``L_TS = mean_i KL(T_i ||
s_i)``, Lemma 1's identity ``mean_i KL(T_i || c) = I_T + KL(Tbar || c)``, and the margin
``G_tau = I_T - tau - L_TS`` (certified iff ``> 0``, Theorem 1). Nats, ``0 log 0 = 0``.
Inputs are validated outside traced code; :class:`CertificateStats` and :func:`certify`
stream data that does not fit in memory. Every function takes probability rows by default
and logits with ``from_logits=True``. The certificate page of the docs has the math.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from certvae_jax.certificate.bounds import margin_bounds
from certvae_jax.certificate.stats import CertificateStats
from certvae_jax.certificate.validation import (
  DEFAULT_ROW_ATOL,
  Array,
  check_pair,
  check_tau,
  is_traced,
  validate_logits,
  validate_pair,
  validate_simplex,
)
from certvae_jax.certificate.verdict import (
  DEFAULT_TAU,
  CertificateReport,
  any_traced,
  certified,
  poison_unless,
)

__all__ = ["alignment_loss", "alignment_loss_from_logits", "certify", "constant_student_cost",
           "margin", "report", "student_mi", "teacher_mi", "valid_inputs"]

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


@jax.jit
def _softmax(logits: Array) -> Array:
  # One compiled call: op by op, a softmax compiles five operations per shape.
  return jax.nn.softmax(logits, axis=-1)


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
    return t, _softmax(s), _alignment_from_logits(t, s)
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
    from_logits: ``student`` holds logits (``L_TS`` from ``log_softmax``, stable;
      default False: probability rows).
    validate: check the inputs (skipped automatically under jit).

  Returns:
    A 0-d JAX array (so that it composes inside traced code); ``float(...)`` it outside.
  """
  if validate:
    check_tau(tau)
  t, _, l_ts = _student_terms(teacher, student, from_logits, validate)
  return _teacher_mi(t) - tau - l_ts


def report(teacher: Array, student: Array, tau: float = DEFAULT_TAU, *,
           from_logits: bool = False, validate: bool = True,
           checked: bool = False, delta: float | None = None) -> CertificateReport:
  """All certificate quantities of one evaluation set at once.

  Args:
    teacher: ``(N, K)`` teacher rows.
    student: ``(N, K)`` raw z-only witness rows at the encoder mean, or its logits with
      ``from_logits``.
    tau: safety buffer for ``margin`` and ``certified``.
    from_logits: ``student`` holds logits (default False: probability rows).
    validate: check the inputs (skipped automatically under jit).
    checked: inside jit, where the inputs cannot be validated, turn every quantity of
      a report whose rows are invalid (see :func:`valid_inputs`) into NaN and
      ``certified`` into False, so that bad rows can never pass as a certificate.
    delta: also bound the population margin at confidence ``1 - delta``
      (:func:`margin_bounds` with its defaults; outside jit only). The report's
      ``bounds`` field holds them and its summary line gives the population verdict.

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
      tau=tau, student_mi=_teacher_mi(s), certified=certified(bare - tau, i_t))
  if checked:
    rep = poison_unless(valid_inputs(teacher, student, from_logits=from_logits), rep)
  if any_traced(rep):
    if delta is not None:
      raise ValueError("delta: population bounds need concrete rows; call report(..., "
                       "delta=...) outside jit")
    return rep
  if delta is not None:
    rep = rep._replace(bounds=margin_bounds(teacher, student, tau=tau, delta=delta,
                                            from_logits=from_logits))
  return rep.to_python()


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


def certify(witness_fn: Callable[[Any], Array], teacher_fn: Callable[[Any], Array],
            batches: Iterable[Any], tau: float = DEFAULT_TAU, *, from_logits: bool = False,
            validate: bool = True) -> CertificateReport:
  """The certificate of a whole data set, streamed batch by batch (paper 1, section 2.3).

  Args:
    witness_fn: ``x -> (B, K)`` the raw z-only witness at the encoder mean,
      ``s(mu(x))``: probability rows by default, logits with ``from_logits=True``. It
      must read the input only through the latent code, or the certificate says
      nothing about the code.
    teacher_fn: ``x -> (B, K)`` teacher rows on the simplex.
    batches: any iterable of input batches (NumPy or JAX arrays, sharded or not).
    tau: the safety buffer.
    from_logits: ``witness_fn`` returns logits (default False: probability rows, the
      default of every function of this module).
    validate: check each batch's rows (fully addressable arrays only).

  Returns:
    The :class:`CertificateReport` (Python numbers), equal to :func:`report` on the
    concatenated rows; memory is ``O(K)`` whatever the number of batches.

  Raises:
    ValueError: an empty ``batches``, or invalid rows in a batch (naming it).
  """
  check_tau(tau)
  for name, fn in (("witness_fn", witness_fn), ("teacher_fn", teacher_fn)):
    if not callable(fn):
      raise ValueError(f"{name}: expected a callable on a batch, got {type(fn).__name__}")
  if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
    raise ValueError(f"batches: expected an iterable of input batches, got "
                     f"{type(batches).__name__}")
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

