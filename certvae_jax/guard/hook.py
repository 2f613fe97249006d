"""The guard's hooks and its measurement: the guard set, its margin, the policy's rule.

See :mod:`certvae_jax.guard` for the policies.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from certvae_jax import certificate, data as data_lib
from certvae_jax.evaluation.splits import padded_batches
from certvae_jax.guard.objective import STUDENT_FIRST
from certvae_jax.rng_streams import GUARD_STREAM
from certvae_jax.training.loop import Event, Hook, Loop, Restore, Rows, SetWeights


def split_rows(num_examples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``(training rows, guard rows)``: a fixed random ``fraction`` of the split held out.

  Deterministic in ``seed``; both sorted; at least one row each.
  """
  if num_examples < 2:
    raise ValueError(f"guard: the training split has {num_examples} rows; a guard set needs "
                     "at least 2")
  held = min(max(1, int(round(fraction * num_examples))), num_examples - 1)
  perm = np.random.default_rng([int(seed), GUARD_STREAM]).permutation(num_examples)
  return np.sort(perm[held:]), np.sort(perm[:held])


def margin_fn(witness_logits: Callable[..., jax.Array], x: np.ndarray, t: np.ndarray,
              tau: float, batch_size: int, sharding: jax.sharding.Sharding | None = None
              ) -> Callable[[Any], float]:
  """``params -> G_tau`` of the raw witness on ``(x, t)``, exact for those rows.

  ``witness_logits`` is an objective's ``(params, x, t) -> logits``
  (:meth:`certvae_jax.objectives.Objective.witness_logits`): the encoder and the head.
  The rows are padded (masked) and placed on the devices once.
  """

  def stats(params, xb, tb, mask):
    logits = witness_logits(params, data_lib.to_unit(xb), tb)
    return certificate.batch_stats(tb, logits, from_logits=True, mask=mask)

  step = jax.jit(stats)
  batches = [b for _, b in padded_batches(x, t, batch_size, sharding, place=True)]

  def margin(params) -> float:
    total = certificate.CertificateStats.zeros(t.shape[1])
    for part in jax.device_get([step(params, *b) for b in batches]):
      total = total.merge(part)
    return float(total.finalize(tau).margin)

  return margin


def raised(weight: float, g: ml_collections.ConfigDict) -> float:
  """``lambda_TS`` multiplied by ``factor``, capped at ``max_lambda`` (never lowered)."""
  return max(weight, min(weight * g.factor, g.max_lambda))


def raise_step(margin: float, weight: float, base: float, g: ml_collections.ConfigDict
               ) -> tuple[str | None, float]:
  """The ``raise`` rule: ``(action or None, new lambda_TS)``.

  ``margin < gamma``: multiply by ``factor``, capped at ``max_lambda`` (no action once at
  the cap). ``margin > gamma_release`` with the weight above ``base``: divide by
  ``factor``, not below ``base``. Otherwise hold.
  """
  if margin < g.gamma:
    new = raised(weight, g)
    return ("raise", new) if new != weight else (None, weight)
  if margin > g.gamma_release and weight > base:
    return "decay", max(base, weight / g.factor)
  return None, weight


class GuardHook(Hook):
  """Measures the guard set and applies the policy (see the module docstring).

  Args:
    settings: ``config.guard``.
    margin: ``params -> G_tau`` on the guard set (:func:`margin_fn`).
    base_weights: the phase's base loss weights.
    checkpoint_every: the run's checkpoint interval (the guard also measures there, so
      that every checkpoint is known to be certified or not).
  """

  def __init__(self, settings: ml_collections.ConfigDict, margin: Callable[[Any], float],
               base_weights: dict[str, float], checkpoint_every: int):
    self.g, self.margin = settings, margin
    self.base = float(base_weights["lambda_ts"])
    self.checkpoint_every = int(checkpoint_every)
    self.last: tuple[int, float] | None = None
    self.last_good: int | None = None
    self.counts = {"raise": 0, "decay": 0, "rollback": 0}
    self.min_margin_after_certified: float | None = None
    self.certified_at: int | None = None

  def wants_sync(self, step: int, last: bool) -> bool:
    return step % self.g.every == 0 or step % self.checkpoint_every == 0 or last

  def on_start(self, loop: Loop) -> None:
    saved = (loop.resumed_meta or {}).get("guard_state")
    if saved:
      self.last_good, self.counts = saved["last_good"], dict(saved["counts"])
      self.certified_at = saved["certified_at"]
      self.min_margin_after_certified = saved["min_margin_after_certified"]
    if loop.checkpointer is not None:
      loop.checkpointer.pin(self.last_good)

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> Any:
    if not self.wants_sync(step, loop.finishing):
      return None
    margin = self.margin(loop.state.params)
    self.last = (step, margin)
    weight = float(np.asarray(loop.state.weights["lambda_ts"]))
    loop.write({"guard": {"margin": margin, "lambda_ts": weight}})
    self._track(step, margin)
    if (self.g.policy == "rollback" and margin < 0 and self.last_good is not None
        and self.last_good < step and self.counts["rollback"] < self.g.max_rollbacks):
      return self._rollback(loop, step, margin, weight)
    if self.g.policy not in ("raise", "rollback"):
      return None
    action, new = raise_step(margin, weight, self.base, self.g)
    if action is None:
      return None
    self.counts[action] += 1
    loop.write_event({"event": "guard", "action": action, "guard_margin": margin,
                      "old_lambda_ts": weight, "new_lambda_ts": new})
    return SetWeights(self._weights(new))

  def _track(self, step: int, margin: float) -> None:
    if self.certified_at is None and margin > 0:
      self.certified_at = step
    if self.certified_at is not None:
      low = self.min_margin_after_certified
      self.min_margin_after_certified = margin if low is None else min(low, margin)

  def _weights(self, lambda_ts: float) -> dict[str, float]:
    """The new weights; ``student_first`` only under ``guard.student_first`` (otherwise a
    rescue's scheduled student-first steps keep it)."""
    if not self.g.student_first:
      return {"lambda_ts": lambda_ts}
    return {"lambda_ts": lambda_ts, STUDENT_FIRST: float(lambda_ts > self.base)}

  def _rollback(self, loop: Loop, step: int, margin: float, weight: float) -> list[Any]:
    """Back to the last certified checkpoint, with the weight raised (capped)."""
    target = self.last_good
    new = raised(weight, self.g)
    self.counts["rollback"] += 1
    loop.checkpointer.discard_after(target)
    event = {"event": "guard", "action": "rollback", "guard_margin": margin,
             "old_lambda_ts": weight, "new_lambda_ts": new, "fired_at": step,
             "rollback_to": target}
    # The row goes at the step training resumes from, after the restore truncates the
    # rows of the abandoned steps (the writers' rewind, certvae_jax.training.writers).
    return [Restore(target), SetWeights(self._weights(new)), Event(event, target)]

  def checkpoint_meta(self, loop: Loop, step: int) -> dict[str, Any]:
    if self.last is not None and self.last[0] == step and self.last[1] > 0:
      self.last_good = step
      if loop.checkpointer is not None:
        loop.checkpointer.pin(step)
    return {"guard_state": {"last_good": self.last_good, "counts": dict(self.counts),
                            "certified_at": self.certified_at,
                            "min_margin_after_certified": self.min_margin_after_certified}}

  def summary(self) -> dict[str, Any]:
    """The summary's ``guard`` section."""
    return {"policy": str(self.g.policy), "interventions": sum(self.counts.values()),
            **{f"{k}s": v for k, v in self.counts.items()},
            "first_certified_step": self.certified_at,
            "min_margin_after_certified": self.min_margin_after_certified,
            "last_certified_checkpoint": self.last_good,
            "last_margin": None if self.last is None else self.last[1]}


class StudentFirstEnd(Hook):
  """Ends the student-first steps of a rescue at ``end_step`` (paper 1, appendix H)."""

  def __init__(self, end_step: int):
    self.end_step = int(end_step)

  def wants_sync(self, step: int, last: bool) -> bool:
    return step == self.end_step

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> Any:
    if step != self.end_step or not math.isclose(
        float(np.asarray(loop.state.weights[STUDENT_FIRST])), 1.0):
      return None
    loop.write_event({"event": "guard", "action": "student_first_end"})
    return SetWeights({STUDENT_FIRST: 0.0})
