"""The shared-safe used head: what training may align instead of the raw head.

Paper 1 (section 3; appendix E.4, E.7 and E.9) lets training optimise the alignment
through "a constancy-preserving shared-safe calibrated head" ``u = g(s)`` while the
theorem reads the raw head ``s`` alone: "if all raw rows are equal, then the protected
rows must also remain equal". The paper does not give ``g``; ours is one calibration
applied to every row,

    ``u = softmax(a * log s + b)``,  ``a = exp(log_temperature) > 0``,  ``b`` in R^K,

with ``a`` and ``b`` shared by all rows. Because ``g`` does not read the row, equal raw
rows give equal used rows: a collapsed code stays collapsed under ``g``, so the
protection can change what training optimises but never what the certificate reads. It
starts at the identity (``a = 1``, ``b = 0``).

A phase with the used head holds the weight :data:`USED_HEAD` (0: align the raw head,
1: align ``u``) and the parameter group :data:`USED_HEAD` (``log_temperature``, ``bias``).
An objective takes part by reading its alignment through :func:`alignment_logits`, as
:func:`certvae_jax.objectives.teacher_guided.guided_total` does, and saying so with
``Objective.used_head = True``; :func:`with_used_head` adds the weight and the
evaluation outputs.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax.objectives.base import Objective

#: The loss weight (0 or 1) and the parameter group of the used head.
USED_HEAD = "used_head"


def init_params(k: int) -> dict[str, jnp.ndarray]:
  """The identity calibration for ``k`` components: ``a = exp(0) = 1``, ``b = 0``."""
  return {"log_temperature": jnp.zeros((), jnp.float32), "bias": jnp.zeros((k,), jnp.float32)}


def calibrate(params: Mapping[str, jnp.ndarray], logits: jnp.ndarray) -> jnp.ndarray:
  """The used head's logits ``a * log s + b`` for raw witness ``logits`` ``(..., K)``;
  the same map for every row (``params``: :func:`init_params`'s tree)."""
  a = jnp.exp(params["log_temperature"])
  return a * jax.nn.log_softmax(logits, axis=-1) + params["bias"]


def alignment_logits(params: Any, logits: jnp.ndarray, weights: Mapping[str, jnp.ndarray]
                     ) -> jnp.ndarray:
  """The logits a loss aligns to the teacher: the raw ``logits``, or the used head's
  while the weight :data:`USED_HEAD` is on. A phase without the used head (no such
  weight) aligns the raw head."""
  if USED_HEAD not in weights:
    return logits
  return jnp.where(weights[USED_HEAD] > 0.5, calibrate(params[USED_HEAD], logits), logits)


def row_kl(teacher: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
  """``KL(T_i || softmax(logits_i))`` per row."""
  return jnp.sum(jax.scipy.special.xlogy(teacher, teacher)
                 - teacher * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def with_used_head(objective: Objective) -> Objective:
  """``objective`` with the used head: the weight :data:`USED_HEAD`, and per split the
  calibrated head's mean alignment ``used_alignment`` and its temperature.

  Raises:
    ValueError: an objective whose loss does not align through :func:`alignment_logits`.
  """
  if not objective.used_head:
    raise ValueError("config.train.used_head: this objective does not align through the "
                     "used head (Objective.used_head is False); use train.used_head='raw'")
  summarize = objective.summarize

  def with_used_outputs(evaluate):
    if evaluate is None:
      return None

    def evaluate_used(params, x, t, rng):
      out = dict(evaluate(params, x, t, rng))
      out["used_kl"] = row_kl(t, calibrate(params[USED_HEAD], out["witness_logits"]))
      out["used_temperature"] = jnp.broadcast_to(
          jnp.exp(params[USED_HEAD]["log_temperature"]), out["used_kl"].shape)
      return out
    return evaluate_used

  def summarize_used(arrays):
    extra = dict(summarize(arrays)) if summarize is not None else {}
    extra["used_alignment"] = float(np.mean(arrays["used_kl"], dtype=np.float64))
    extra["used_temperature"] = float(arrays["used_temperature"][0])
    return extra

  return objective._replace(weight_names=objective.weight_names + (USED_HEAD,),
                            evaluate=with_used_outputs(objective.evaluate),
                            evaluate_latents=with_used_outputs(objective.evaluate_latents),
                            summarize=summarize_used)
