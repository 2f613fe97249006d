"""The certificate's report: every quantity of one evaluation set (paper 1, section 2.3)."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from certvae_jax.certificate.validation import is_traced

DEFAULT_TAU = 0.05
TAU_SENSITIVITY = (0.0, 0.05, 0.15)  # paper 1, appendix B
# A margin this close to zero (relative to 1 + I_T) is within float32 rounding of the
# sums and is not counted as a certificate: with tau = 0 and the student exactly Tbar,
# rounding alone can give G = +2e-16.
CERTIFY_SLACK = 1e-5


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
      beyond float32 rounding: certified on these rows (their empirical distribution).
    bounds: ``None``, or the population lower bounds on ``margin`` at a stated
      confidence (:class:`certvae_jax.bounds.MarginBounds`).
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
  bounds: Any = None

  def margins(self, taus: Sequence[float] = TAU_SENSITIVITY) -> dict[float, float]:
    """``G_tau`` for several ``tau`` without retraining (paper 1, appendix B)."""
    return {float(t): float(self.bare_margin) - float(t) for t in taus}

  @property
  def certifiable(self) -> bool:
    """Whether any witness could certify: needs ``I_T > tau`` (``G_tau <= I_T - tau``)."""
    return float(self.teacher_mi) > float(self.tau)

  def to_python(self) -> "CertificateReport":
    """The same report with plain Python numbers (``int``, ``float``, ``bool``)."""
    return self._replace(**{f: _to_py(getattr(self, f)) for f in self._fields if f != "bounds"})

  def to_dict(self, taus: Sequence[float] = TAU_SENSITIVITY) -> dict[str, Any]:
    """Plain Python numbers for JSON, with the tau-sensitivity margins."""
    out = {f: _to_py(getattr(self, f)) for f in self._fields if f != "bounds"}
    if self.bounds is not None:
      out["bounds"] = self.bounds._asdict()
    out["tau_sensitivity"] = {f"{t:g}": m for t, m in self.margins(taus).items()}
    return out

  def summary_line(self) -> str:
    """One line such as ``certified: G_tau=+0.62 (I_T=1.90, L_TS=1.23, tau=0.05)``.

    With :attr:`bounds`, the verdict says ``on the evaluation set`` and a second clause
    gives the population verdict at confidence ``1 - delta``: certified only where a
    lower bound is positive (the distribution-free one, else the approximate bootstrap).
    """
    verdict = "certified" if bool(self.certified) else "not certified"
    if self.bounds is not None:
      verdict += " on the evaluation set"
    line = (f"{verdict}: G_tau={float(self.margin):+.2f} (I_T={float(self.teacher_mi):.2f}, "
            f"L_TS={float(self.alignment):.2f}, tau={float(self.tau):.2f})")
    if self.bounds is not None:
      line += "; " + population_verdict(self.bounds)
    if not self.certifiable:
      line += " [teacher MI <= tau: no positive certificate is possible with this teacher]"
    return line


def population_verdict(bounds: Any) -> str:
  """The population clause of a summary line, from a ``MarginBounds``."""
  level = f"{1.0 - float(bounds.delta):g}"
  numbers = (f"lower bounds: distribution-free {float(bounds.distribution_free):+.2f}, "
             f"bootstrap {float(bounds.bootstrap):+.2f}")
  if float(bounds.distribution_free) > 0:
    return f"certified for the population at confidence {level} ({numbers})"
  if float(bounds.bootstrap) > 0:
    return f"certified for the population at approximate confidence {level} ({numbers})"
  return f"not certified for the population at confidence {level} ({numbers})"


def _to_py(v: Any) -> Any:
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  return float(v)


def certified(g_tau: Any, i_t: Any) -> Any:
  """``G_tau > 0`` beyond float32 rounding: ``G_tau > CERTIFY_SLACK * (1 + I_T)``."""
  return g_tau > CERTIFY_SLACK * (1.0 + i_t)


def poison_unless(ok: Any, rep: CertificateReport) -> CertificateReport:
  """``rep`` where ``ok``; NaN quantities and ``certified = False`` where not."""
  nan = lambda v: jnp.where(ok, v, jnp.nan)  # noqa: E731
  return rep._replace(teacher_mi=nan(rep.teacher_mi), alignment=nan(rep.alignment),
                      bare_margin=nan(rep.bare_margin), margin=nan(rep.margin),
                      student_mi=nan(rep.student_mi), certified=ok & rep.certified)


def any_traced(rep: CertificateReport) -> bool:
  """Whether the report was computed inside traced code (JAX scalars, not numbers)."""
  return any(is_traced(v) for v in rep)
