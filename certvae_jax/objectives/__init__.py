"""Objectives: what a train step minimises and what evaluation reads, by name.

An :class:`Objective` is a NamedTuple of pure functions (as optax's
``GradientTransformation`` is a pair of them); the step and the evaluation are built from
it alone, and a new one is a builder registered under a name (:func:`register`;
docs/extending.md shows one). Shipped: ``teacher_guided`` (paper 1, section 3; every
variant of both papers is it with other weights;
:mod:`~certvae_jax.objectives.teacher_guided`), ``code_regression`` (paper 2's
RST-prefit, :mod:`certvae_jax.simplex`) and paper 1's baselines ``free_bits``, ``vq_vae``
and ``gmvae`` (:mod:`certvae_jax.baselines`); the last two groups register when
:mod:`certvae_jax.registrations` is imported. The type and registry are
:mod:`~certvae_jax.objectives.base`, the loss terms :mod:`~certvae_jax.objectives.terms`,
the shared-safe used head a teacher-guided loss may align instead of the raw head
:mod:`~certvae_jax.objectives.used_head`.
"""

from certvae_jax.objectives.base import (
  Builder,
  EvalFn,
  LossFn,
  Objective,
  Weights,
  WitnessFn,
  build,
  names,
  register,
)
from certvae_jax.objectives.teacher_guided import (
  guided,
  guided_total,
  reconstruction_nll,
  teacher_guided,
  vae_evaluation,
  vae_latents,
  vae_witness,
)
from certvae_jax.objectives.used_head import with_used_head

__all__ = ["Builder", "EvalFn", "LossFn", "Objective", "Weights", "WitnessFn", "build", "guided",
           "guided_total", "names", "reconstruction_nll", "register", "teacher_guided",
           "vae_evaluation", "vae_latents", "vae_witness",
           "with_used_head"]
