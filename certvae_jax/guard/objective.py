"""What a training guard changes in the loss: student-first steps and the barrier.

A guarded objective carries one more loss weight, ``student_first`` (0 or 1, in the train
state, so it is checkpointed and a hook may change it). While it is 1 the step minimises
the student track alone, ``lambda_TS L_align + lambda_bal L_bal``, and only the encoder
and the raw head move (paper 1, appendix H). Appendix G's barrier ``-kappa log G_batch``
uses the minibatch margin; :func:`barrier` continues it below a floor by its tangent. The
Training page of the docs ("Guarded training") has the policies and their settings.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from certvae_jax import certificate
from certvae_jax.objectives import Objective

STUDENT_FIRST = "student_first"
# What a student-first step trains (parameter groups of the state's tree): the encoder, the
# raw head and, in a phase that has it, the shared-safe used head's calibration.
STUDENT_GROUPS = ("encoder", "head", "used_head")


def barrier(margin: jnp.ndarray, kappa: float, floor: float) -> jnp.ndarray:
  """Appendix G's barrier ``-kappa log(margin)``, continued below ``floor`` by its tangent.

  The log is an infinite wall at ``margin = 0``, and a minibatch can land on the wrong
  side of it. Below ``floor > 0`` the term is the tangent line at ``floor``,
  ``-kappa (log floor + (margin - floor) / floor)``: finite, continuous with its first
  derivative, and pushing with the barrier's largest gradient ``kappa / floor``. A
  minibatch with ``margin <= 0`` is therefore trained with that constant extra
  alignment weight rather than skipped or allowed to produce ``inf``.

  Args:
    margin: the minibatch margin ``G_batch`` (any shape).
    kappa: the barrier weight, >= 0.
    floor: where the log gives way to its tangent, > 0.
  """
  above = margin >= floor
  # The log's argument is kept >= floor, so that the untaken branch's gradient is finite
  # (a where, not a maximum, whose gradient splits at the tie margin == floor).
  inside = -kappa * jnp.log(jnp.where(above, margin, floor))
  tangent = -kappa * (jnp.log(floor) + (margin - floor) / floor)
  return jnp.where(above, inside, tangent)


def batch_margin(teacher: jnp.ndarray, alignment: jnp.ndarray, tau: float) -> jnp.ndarray:
  """``G_batch = I_T(batch) - tau - L_align``: the certificate's margin on one minibatch."""
  return certificate.teacher_mi(teacher, validate=False) - tau - alignment


def guarded(objective: Objective, *, tau: float, kappa: float = 0.0, floor: float = 0.05,
            student_groups: Sequence[str] = STUDENT_GROUPS) -> Objective:
  """``objective`` with the ``student_first`` weight and, when ``kappa > 0``, the barrier.

  Args:
    objective: a teacher-guided objective: it reads the weights ``lambda_ts`` and
      ``lambda_bal`` and reports the terms ``align`` and ``bal``.
    tau: the certificate's tolerance, used by the minibatch margin.
    kappa: the barrier weight; 0 leaves the barrier out.
    floor: see :func:`barrier`.
    student_groups: the parameter groups a student-first step updates.

  Raises:
    ValueError: an objective without alignment, or a bad ``kappa`` / ``floor``.
  """
  if "lambda_ts" not in objective.weight_names:
    raise ValueError("guard: the objective has no alignment weight lambda_ts to guard; "
                     f"its weights are {objective.weight_names}")
  if not kappa >= 0 or not floor > 0:
    raise ValueError(f"guard: expected kappa >= 0 and barrier_floor > 0, got {kappa!r} and "
                     f"{floor!r}")
  base_names = objective.weight_names

  def loss(params, batch, rng, weights):
    total, terms = objective.loss(params, batch, rng, {k: weights[k] for k in base_names})
    # The alignment the total trains: the used head's where the phase has one.
    align = terms.get("used_align", terms["align"])
    student = weights["lambda_ts"] * align + weights.get("lambda_bal", 0.0) * terms["bal"]
    if kappa > 0:
      margin = batch_margin(batch["t"], terms["align"], tau)
      wall = barrier(margin, kappa, floor)
      student, total = student + wall, total + wall
      terms = dict(terms, barrier=wall, batch_margin=margin)
    first = weights[STUDENT_FIRST]
    return first * student + (1.0 - first) * total, terms

  def gate_updates(updates: Any, weights) -> Any:
    if objective.gate_updates is not None:
      updates = objective.gate_updates(updates, weights)
    keep = 1.0 - weights[STUDENT_FIRST]
    return {group: u if group in student_groups else jax.tree.map(lambda a: a * keep, u)
            for group, u in updates.items()}

  return objective._replace(loss=loss, weight_names=base_names + (STUDENT_FIRST,),
                            gate_updates=gate_updates)
