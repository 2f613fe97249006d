"""The guard as a phase extension: which phases it guards and how (paper 1, appendix H).

Registered with :func:`certvae_jax.training.extensions.register` by
:mod:`certvae_jax.registrations`; the run itself knows nothing of the guard.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from certvae_jax.configs.schema import SECTIONS
from certvae_jax.guard import hook as hook_lib
from certvae_jax.guard.objective import STUDENT_FIRST, guarded
from certvae_jax.training.extensions import PhaseExtension, PhaseInputs, PhasePlan


class GuardPlan(PhasePlan):
  """How one phase is guarded (see :func:`plan`).

  Args:
    config: the run config (its ``guard`` and ``eval.tau``).
    student_first_steps: student-first steps at the start (a rescue's), or 0.
    tag: added to the phase directory's name.
  """

  def __init__(self, config: ml_collections.ConfigDict, student_first_steps: int, tag: str):
    self.config, self.g = config, config.guard
    self.policy = str(self.g.policy)
    self.student_first_steps, self.tag = int(student_first_steps), tag
    self.hook: hook_lib.GuardHook | None = None

  @property
  def measures(self) -> bool:
    """Whether a guard set is held out and measured."""
    return self.policy != "off"

  def weights(self) -> dict[str, float]:
    return {STUDENT_FIRST: 1.0 if self.student_first_steps else 0.0}

  def meta(self) -> dict[str, Any]:
    """The guard settings a checkpoint of a guarded phase must match."""
    return {"guard": {**{k: self.g[k] for k in SECTIONS["guard"]},
                      "student_first_steps": self.student_first_steps}}

  def objective(self, objective: Any) -> Any:
    """Student-first steps, and appendix G's barrier under ``policy='barrier'``."""
    kappa = float(self.g.kappa) if self.policy == "barrier" else 0.0
    return guarded(objective, tau=float(self.config.eval.tau), kappa=kappa,
                   floor=float(self.g.barrier_floor))

  def hooks(self, inputs: PhaseInputs) -> tuple[np.ndarray | None, list[Any]]:
    """The student-first end, and the guard hook on a held-out guard set."""
    cfg, hooks = inputs.config, []
    if self.student_first_steps:
      hooks.append(hook_lib.StudentFirstEnd(inputs.start_step + self.student_first_steps))
    if not self.measures:
      return None, hooks
    x_train = inputs.x_train
    rows, held = hook_lib.split_rows(len(x_train), float(self.g.fraction), int(cfg.seed))
    if len(rows) < cfg.train.batch_size:
      raise ValueError(f"config.guard.fraction: holding out {len(held)} of {len(x_train)} "
                       f"training rows as the guard set leaves {len(rows)}, fewer than "
                       f"train.batch_size ({cfg.train.batch_size})")
    margin = hook_lib.margin_fn(inputs.witness_logits, x_train[held], inputs.t_train[held],
                                float(cfg.eval.tau), int(cfg.eval.batch_size),
                                inputs.batch_sharding)
    self.hook = hook_lib.GuardHook(self.g, margin, inputs.weights,
                                   int(cfg.train.checkpoint_every))
    return rows, hooks + [self.hook]

  def summary(self) -> dict[str, Any]:
    if self.hook is None:
      return {}
    found = self.hook.summary()
    return {"guard": found, "guard_interventions": found["interventions"]}


def plan(config: ml_collections.ConfigDict, mode: Any) -> GuardPlan | None:
  """The guard of a phase of ``mode``, or None for an unguarded one.

  Only phases that align the raw witness (``lambda_TS > 0``) are guarded: warm-up,
  ``noalign`` and the baselines run unguarded under any guard config, so that a
  protocol run guards ``full`` and ``rescue`` and keeps its controls.
  ``guard.student_first_steps`` applies to modes that continue another run (``rescue``).
  """
  g = config.guard
  if mode.weights(config).get("lambda_ts", 0.0) <= 0:
    return None
  first = int(g.student_first_steps) if mode.init == "continue" else 0
  if g.policy == "off" and first == 0:
    return None
  parts = ([f"guard_{g.policy}"] if g.policy != "off" else []) + (
      [f"sf{first}"] if first else [])
  return GuardPlan(config, first, "_".join(parts))


EXTENSION = PhaseExtension(plan, weight_names=(STUDENT_FIRST,))
