"""Can re-enabling alignment move the witness? Paper 1, appendix H's rescue conditions.

At a collapsed checkpoint, read at ``z = mu(x)``: ``align_grad_norm`` (the norm of
``grad L_align`` over the parameters a student-first step trains; zero means alignment
cannot move them), ``response_correlation`` (the correlation between the logit change
``J (-grad L_align)``, centred over classes and rows, and the teacher's variation ``T(x) -
Tbar``; positive means the first alignment step moves the witness along it) and
``input_dependent_fraction``. The Training page of the docs explains them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax import certificate

LogitsFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def _split(params: dict, groups: Sequence[str]) -> tuple[dict, dict]:
  trained = {k: v for k, v in params.items() if k in groups}
  if not trained:
    raise ValueError(f"rescue diagnostics: none of the parameter groups {tuple(groups)} is in "
                     f"the parameters (groups: {sorted(params)})")
  return trained, {k: v for k, v in params.items() if k not in groups}


def rescue_diagnostics(logits_fn: LogitsFn, params: dict, x: jnp.ndarray, teacher: jnp.ndarray,
                       groups: Sequence[str] = ("encoder", "head")) -> dict[str, float]:
  """Appendix H's rescue diagnostics at ``params`` on the rows ``(x, teacher)``.

  Args:
    logits_fn: ``(params, x) -> witness logits (N, K)``: the raw witness at ``mu(x)``.
    params: the model's parameter tree (top-level groups).
    x: inputs, ``(N, ...)``.
    teacher: the teacher's rows ``T(x)``, ``(N, K)``.
    groups: the parameter groups alignment may move.

  Returns:
    ``align_grad_norm``, ``response_correlation`` (0 when either side is zero),
    ``logit_response_norm`` (RMS per row of ``delta_l`` centred over classes),
    ``input_dependent_fraction`` (the norm of its input-dependent part over its norm),
    ``teacher_variation`` (RMS of ``T(x) - Tbar`` per row), ``alignment`` and
    ``teacher_mi`` on these rows, and ``rows``.
  """
  trained, rest = _split(params, groups)
  teacher = jnp.asarray(teacher)

  def alignment(p):
    return certificate.alignment_loss_from_logits(teacher, logits_fn({**rest, **p}, x),
                                                  validate=False)

  loss, grad = jax.value_and_grad(alignment)(trained)
  direction = jax.tree.map(jnp.negative, grad)
  _, delta = jax.jvp(lambda p: logits_fn({**rest, **p}, x), (trained,), (direction,))
  delta = np.asarray(delta, np.float64)
  delta = delta - delta.mean(axis=1, keepdims=True)
  varying = delta - delta.mean(axis=0, keepdims=True)
  t = np.asarray(teacher, np.float64)
  centred = t - t.mean(axis=0, keepdims=True)
  norms = np.linalg.norm(varying), np.linalg.norm(centred)
  corr = float(np.sum(varying * centred) / (norms[0] * norms[1])) if min(norms) > 0 else 0.0
  total = np.linalg.norm(delta)
  rows = len(t)
  return {"align_grad_norm": float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                                                for g in jax.tree.leaves(grad)))),
          "response_correlation": corr,
          "logit_response_norm": float(total / np.sqrt(rows)),
          "input_dependent_fraction": float(norms[0] / total) if total > 0 else 0.0,
          "teacher_variation": float(norms[1] / np.sqrt(rows)),
          "alignment": float(loss),
          "teacher_mi": float(certificate.teacher_mi(t, validate=False)),
          "rows": rows}
