"""Phase extensions: plug-ins that change a whole phase, not one step of its loop.

A :class:`~certvae_jax.training.loop.Hook` acts on the running loop. Some additions
also change what the phase *is*: the training guard (:mod:`certvae_jax.guard`, paper 1,
appendices G and H) holds rows of the training split out, adds a loss weight and
transforms the objective, names the phase's directory and checkpoint settings, and adds
a section to the summary. An extension does each of these through a
:class:`PhasePlan`, so that the run knows no extension by name; it is registered with
:func:`register` and consulted for every phase of every run.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import ml_collections
import numpy as np

from certvae_jax import plugins


class PhaseInputs(NamedTuple):
  """What a plan's hooks may read of the phase they are built for."""
  config: ml_collections.ConfigDict
  x_train: np.ndarray           # the training split (uint8 or float inputs)
  t_train: np.ndarray           # the teacher's rows on it
  witness_logits: Callable[..., Any]  # (params, x, t) -> logits of the raw witness
  batch_sharding: Any           # where a batch of rows goes (a jax.sharding.Sharding)
  start_step: int               # the step the phase's own steps start from
  weights: dict[str, float]     # the phase's base loss weights


class PhasePlan:
  """One extension's part in one phase. Each method's default changes nothing."""

  #: Added to the phase directory's name (``full_guard_raise``); ``""`` for none.
  tag: str = ""

  def weights(self) -> dict[str, float]:
    """Loss weights the plan adds to the train state, with their starting values."""
    return {}

  def meta(self) -> dict[str, Any]:
    """Settings a checkpoint of the phase must match to be resumed."""
    return {}

  def objective(self, objective: Any) -> Any:
    """The objective the phase trains (``objective`` transformed, or as it is)."""
    return objective

  def hooks(self, inputs: PhaseInputs) -> tuple[np.ndarray | None, list[Any]]:
    """``(training rows or None for all, loop hooks)``."""
    del inputs
    return None, []

  def summary(self) -> dict[str, Any]:
    """Entries added to the phase's summary when it ends."""
    return {}


class PhaseExtension(NamedTuple):
  """A registered extension.

  Attributes:
    plan: ``(config, mode) -> PhasePlan | None``: the extension's part in a phase of
      ``mode`` under ``config``, or None where it does not act.
    weight_names: every loss weight a plan of it may add, so that a checkpoint that
      holds one is restored with it.
  """
  plan: Callable[[ml_collections.ConfigDict, Any], PhasePlan | None]
  weight_names: tuple[str, ...] = ()


_REGISTRY = plugins.Registry("phase extension", "extension", {},
                             hint=plugins.REGISTRATIONS_HINT)


def register(name: str, extension: PhaseExtension) -> PhaseExtension:
  """Adds ``extension`` under ``name`` (a later registration replaces it)."""
  return _REGISTRY.register(name, extension)


def plans(config: ml_collections.ConfigDict, mode: Any) -> tuple[PhasePlan, ...]:
  """The plans of every registered extension that acts on a phase of ``mode``."""
  found = (extension.plan(config, mode) for extension in _REGISTRY.entries.values())
  return tuple(plan for plan in found if plan is not None)


def weight_names() -> tuple[str, ...]:
  """Every loss weight a registered extension may add."""
  return tuple(name for extension in _REGISTRY.entries.values()
               for name in extension.weight_names)


def transform(objective: Any, phase_plans: tuple[PhasePlan, ...]) -> Any:
  """``objective`` as the plans change it, in registration order."""
  for plan in phase_plans:
    objective = plan.objective(objective)
  return objective
