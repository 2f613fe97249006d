"""Phase extensions: plug-ins that change a whole phase, not one step of its loop.

A :class:`~certvae_jax.training.loop.Hook` acts on the running loop. Some additions
also change what the phase *is*: the training guard (:mod:`certvae_jax.guard`, paper 1,
appendices G and H) holds rows of the training split out, adds a loss weight and
transforms the objective, names the phase's directory and checkpoint settings, and adds
a section to the summary; the shared-safe used head (appendix E.9) also adds parameters
of its own, which a state restored from another phase (a rescue's ``noalign``) lacks. An
extension does each of these through a :class:`PhasePlan`, so that the run knows no
extension by name; it is registered with :func:`register` and consulted for every phase
of every run.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
import optax

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
  #: Whether :meth:`objective` changes ``evaluate`` or ``summarize``: the phase's
  #: evaluation then reads the transformed objective (its own compiled step).
  changes_evaluation: bool = False

  def weights(self) -> dict[str, float]:
    """Loss weights the plan adds to the train state, with their starting values."""
    return {}

  def params(self, num_classes: int) -> dict[str, Any]:
    """Parameter groups the plan adds to the state (``params[group]``), with their
    starting values. A state without them (fresh, or restored from a phase without the
    plan) gets them, with a fresh optimizer state for them alone
    (:func:`with_params`)."""
    del num_classes
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


def with_params(state: Any, phase_plans: tuple[PhasePlan, ...], num_classes: int,
                tx: optax.GradientTransformation) -> Any:
  """``state`` (a :class:`~certvae_jax.training.step.TrainState`) with every parameter
  group the plans add that it lacks. The optimizer state of the new groups is
  ``tx.init``'s; every leaf it shares (by path and shape) with ``state.opt_state`` is
  kept, so the existing parameters continue their moments and the step count exactly.
  Pure: works on arrays and on ``jax.eval_shape``'s shapes alike."""
  added = {group: value for plan in phase_plans
           for group, value in plan.params(num_classes).items() if group not in state.params}
  if not added:
    return state
  params = dict(state.params, **added)
  old = {path: leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
  # Compiled as one call: op by op, every zero moment of a new shape compiles on its own.
  fresh, treedef = jax.tree_util.tree_flatten_with_path(jax.jit(tx.init)(params))
  leaves = [old[path] if path in old and np.shape(old[path]) == np.shape(leaf) else leaf
            for path, leaf in fresh]
  return state.replace(params=params, opt_state=jax.tree_util.tree_unflatten(treedef, leaves))


def changing_evaluation(phase_plans: tuple[PhasePlan, ...]) -> tuple[PhasePlan, ...]:
  """The plans whose objective transform the phase's evaluation reads."""
  return tuple(plan for plan in phase_plans if plan.changes_evaluation)


def transform(objective: Any, phase_plans: tuple[PhasePlan, ...]) -> Any:
  """``objective`` as the plans change it, in registration order."""
  for plan in phase_plans:
    objective = plan.objective(objective)
  return objective
