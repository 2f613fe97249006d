"""Objectives: what a train step minimises and what evaluation reads, by name.

An :class:`Objective` is a NamedTuple of pure functions (as optax's
``GradientTransformation`` is a pair of them): the step and the evaluation are built
from it and know nothing else about the model. A new objective is a builder
registered under a name::

    @objectives.register("my_objective")
    def build(model, config):
      def loss(params, batch, rng, weights):
        ...
        return total, {"term": value}
      return objectives.Objective(loss=loss, weight_names=("w",),
                                  evaluate=objectives.vae_evaluation(model, nll))

and a mode (:mod:`certvae_jax.training.modes`) that names it. Nothing in the step, the loop or
the run needs to change.

Shipped:

* ``teacher_guided`` (paper 1, section 3):
  ``L = L_rec + alpha_KL KL(q(z|x) || N(0, I)) + lambda_TS L_align + lambda_bal L_bal``.
  Warm-up, ``full``, ``noalign``, ``rescue`` and paper 2's ``vae`` and RST-VAE are this
  objective with other weights.
* ``code_regression`` (paper 2, RST-prefit's first stage;
  :mod:`certvae_jax.simplex.training`).
* ``free_bits``, ``vq_vae``, ``gmvae``: paper 1's baselines
  (:mod:`certvae_jax.baselines.objectives`).

The type and its registry are in :mod:`~certvae_jax.objectives.base`, the loss terms in
:mod:`~certvae_jax.objectives.terms`, the teacher-guided objective in
:mod:`~certvae_jax.objectives.teacher_guided`.

The last two groups register when :mod:`certvae_jax.registrations` is imported (the run
does).
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
  vae_witness,
)

__all__ = ["Builder", "EvalFn", "LossFn", "Objective", "Weights", "WitnessFn", "build", "guided",
           "guided_total", "names", "reconstruction_nll", "register", "teacher_guided",
           "vae_evaluation", "vae_witness"]
