"""The shared-safe used head as a phase extension (paper 1, section 3; appendix E.9).

Under ``config.train.used_head = 'shared_safe'`` every phase that aligns the raw witness
(``lambda_TS > 0``: ``full``, ``rescue``) gets the used head of
:mod:`certvae_jax.objectives.used_head`: its parameter group (a state restored from
``noalign`` gains it, with fresh optimizer state for it alone), the loss weight
``used_head`` and a hook that switches it. "The used-head protection is activated only
when" the raw margin is at or below ``train.used_head_trigger``; "otherwise the raw head
is optimized directly". The margin it reads is the raw certificate's ``G_tau`` on the
training split: measured when the phase starts, and at every evaluation after. The
weight is in the train state and the hook's record in the checkpoint, so a killed run
resumes exactly. The certificate always reads the raw head; each evaluation also reports
the calibrated head's ``used_alignment`` and ``used_margin``.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from certvae_jax.guard.hook import margin_fn
from certvae_jax.objectives import used_head
from certvae_jax.objectives.used_head import USED_HEAD
from certvae_jax.training.extensions import PhaseExtension, PhaseInputs, PhasePlan
from certvae_jax.training.loop import Hook, Loop, SetWeights


class UsedHeadHook(Hook):
  """Switches the weight ``used_head`` on while the raw training margin is at or below
  ``trigger``, and off above it.

  Args:
    trigger: the margin at or below which the used head is trained.
    start_margin: ``params -> G_tau`` on the training split, measured at a fresh start.
  """

  def __init__(self, trigger: float, start_margin):
    self.trigger, self.start_margin = float(trigger), start_margin
    self.record: dict[str, Any] = {"switches": 0, "active_evaluations": 0, "evaluations": 0,
                                   "active_steps": 0, "on_since": None,
                                   "first_active_step": None, "first_certified_step": None}
    self.end_step = 0

  def on_start(self, loop: Loop) -> Any:
    self.end_step = loop.step
    saved = (loop.resumed_meta or {}).get("used_head_state")
    if saved is not None:
      self.record = dict(saved)
      return None
    return self._switch(loop, loop.step, self.start_margin(loop.state.params))

  def on_eval(self, loop: Loop, step: int, results) -> Any:
    margin = float(results["train"]["margin"])
    self.record["evaluations"] += 1
    if margin > 0 and self.record["first_certified_step"] is None:
      self.record["first_certified_step"] = step
    on = margin <= self.trigger
    self.record["active_evaluations"] += int(on)
    loop.write({"used_head": {"active": float(on)}})
    return self._switch(loop, step, margin)

  def _switch(self, loop: Loop, step: int, margin: float) -> SetWeights | None:
    """The weight for ``margin``, where it changes (with an event row)."""
    on = margin <= self.trigger
    if on and self.record["first_active_step"] is None:
      self.record["first_active_step"] = step
    if on == (float(np.asarray(loop.state.weights[USED_HEAD])) > 0.5):
      return None
    self.record["switches"] += 1
    if on:
      self.record["on_since"] = step
    else:
      # None or later only after a guard's rollback restored an earlier weight.
      since = self.record["on_since"]
      self.record["active_steps"] += max(0, step - since) if since is not None else 0
      self.record["on_since"] = None
    loop.write_event({"event": "used_head", "action": "on" if on else "off",
                      "train_margin": margin, "trigger": self.trigger})
    return SetWeights({USED_HEAD: float(on)})

  def checkpoint_meta(self, loop: Loop, step: int) -> dict[str, Any]:
    return {"used_head_state": dict(self.record)}

  def on_restore(self, loop: Loop, step: int, meta) -> None:
    """A guard's rollback: the record saved at ``step``, so that the abandoned steps
    count for nothing (the state's weight comes back from there too)."""
    saved = meta.get("used_head_state")
    if saved is not None:
      self.record = dict(saved)

  def on_end(self, loop: Loop) -> None:
    self.end_step = loop.step

  def summary(self) -> dict[str, Any]:
    """The record, with the steps trained through the used head up to the end."""
    out = dict(self.record)
    since = out.pop("on_since")
    if since is not None:
      out["active_steps"] += max(0, self.end_step - since)
    return out


class UsedHeadPlan(PhasePlan):
  """The used head in one phase (see the module docstring)."""

  tag = "shared_safe"
  changes_evaluation = True

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.trigger = float(config.train.used_head_trigger)
    self.hook: UsedHeadHook | None = None

  def weights(self) -> dict[str, float]:
    return {USED_HEAD: 0.0}  # the hook sets it from the margin at the start

  def params(self, num_classes: int) -> dict[str, Any]:
    return {USED_HEAD: used_head.init_params(num_classes)}

  def meta(self) -> dict[str, Any]:
    return {"used_head_settings": {"kind": str(self.config.train.used_head),
                                   "trigger": self.trigger}}

  def objective(self, objective: Any) -> Any:
    return used_head.with_used_head(objective)

  def hooks(self, inputs: PhaseInputs) -> tuple[np.ndarray | None, list[Any]]:
    cfg = inputs.config
    margin = margin_fn(inputs.witness_logits, inputs.x_train, inputs.t_train,
                       float(cfg.eval.tau), int(cfg.eval.batch_size), inputs.batch_sharding)
    self.hook = UsedHeadHook(self.trigger, margin)
    return None, [self.hook]

  def summary(self) -> dict[str, Any]:
    if self.hook is None:
      return {}
    return {"used_head": {"kind": str(self.config.train.used_head), "trigger": self.trigger,
                          **self.hook.summary()}}


def plan(config: ml_collections.ConfigDict, mode: Any) -> UsedHeadPlan | None:
  """The used head of a phase of ``mode``: phases that align the raw witness, under
  ``train.used_head = 'shared_safe'``; None otherwise."""
  if config.train.used_head != "shared_safe" or mode.weights(config).get("lambda_ts", 0) <= 0:
    return None
  return UsedHeadPlan(config)


EXTENSION = PhaseExtension(plan, weight_names=(USED_HEAD,))
