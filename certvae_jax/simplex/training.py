"""Paper 2's parts of a run, registered on import: the simplex head and RST-prefit.

* model part ``head='simplex'``: the fixed, parameter-free simplex witness;
* objective ``code_regression``: ``mean ||mu(x) - [mu*(x), 0]||^2``, the encoder mean
  regressed onto the analytic code of the fixed simplex witness;
* mode ``prefit``: that objective for ``train.prefit_steps`` steps on its own stream;
* mode ``rst_prefit``: RST-VAE (every term on) from the prefit's parameters, with a fresh
  optimizer; runs ``prefit`` first when it is missing;
* modes ``prefit_alpha`` and ``rst_alpha_prefit`` (RST-alpha-prefit, paper 2 v4): the same,
  regressing onto the scaled code ``alpha mu*`` with ``alpha = train.prefit_alpha``, a
  number in [0, 1] or ``'balance'`` (:func:`certvae_jax.simplex.balance_alpha`, our
  resolution); the alpha used is the phase's weight ``code_scale``.

These modes need ``model.head='simplex'``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from certvae_jax.models import registry
from certvae_jax.models.vae import TeacherGuidedVAE
from certvae_jax.objectives import (
  Objective,
  reconstruction_nll,
  register,
  vae_evaluation,
  vae_latents,
  vae_witness,
)
from certvae_jax.rng_streams import PREFIT_CODE
from certvae_jax.simplex.path import balance_alpha
from certvae_jax.simplex.theory import SimplexWitness, analytic_code_unchecked
from certvae_jax.training import modes


@register("code_regression")
def code_regression(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """RST-prefit's first stage (paper 2): ``mean ||mu(x) - [mu*(x), 0]||^2``.

  The target is the least-norm code of the fixed simplex witness with gain
  ``config.model.witness_beta``: ``mu*(x)`` on the first ``K-1`` coordinates, 0 on the
  rest. Needs a teacher without zero entries (the code takes ``log T``).
  """
  beta = float(config.model.witness_beta)

  def loss(params, batch, rng, weights):
    del rng, weights
    t = batch["t"]
    k = t.shape[-1]
    mu, _ = model.apply({"params": params}, batch["x"], method=TeacherGuidedVAE.encode)
    code = analytic_code_unchecked(t, beta)
    mse = jnp.mean(jnp.sum(jnp.square(mu[:, : k - 1] - code), axis=-1)
                   + jnp.sum(jnp.square(mu[:, k - 1:]), axis=-1))
    return mse, {"code_mse": mse}

  return Objective(loss=loss, weight_names=(),
                   evaluate=vae_evaluation(model, reconstruction_nll(config)),
                   witness=vae_witness(model), evaluate_latents=vae_latents(model))


@register("scaled_code_regression")
def scaled_code_regression(model: TeacherGuidedVAE, config: ml_collections.ConfigDict
                           ) -> Objective:
  """RST-alpha-prefit's first stage: ``mean ||mu(x) - [alpha mu*(x), 0]||^2`` with
  ``alpha`` the weight ``code_scale``."""
  base = code_regression(model, config)

  def loss(params, batch, rng, weights):
    del rng
    t = batch["t"]
    k = t.shape[-1]
    mu, _ = model.apply({"params": params}, batch["x"], method=TeacherGuidedVAE.encode)
    code = weights["code_scale"] * analytic_code_unchecked(t, float(config.model.witness_beta))
    mse = jnp.mean(jnp.sum(jnp.square(mu[:, : k - 1] - code), axis=-1)
                   + jnp.sum(jnp.square(mu[:, k - 1:]), axis=-1))
    return mse, {"code_mse": mse}

  return base._replace(loss=loss, weight_names=("code_scale",))


def prefit_alpha(config: ml_collections.ConfigDict, t_train: np.ndarray) -> dict[str, float]:
  """``{'code_scale': alpha}``: ``train.prefit_alpha`` as a number, or the balance scale
  of the teacher's training rows under this run's ``lambda_TS`` and ``alpha_KL``."""
  positive_teacher(t_train)
  value = config.train.prefit_alpha
  if value == "balance":
    alpha = balance_alpha(t_train, float(config.model.witness_beta),
                          float(config.train.lambda_ts), float(config.train.alpha_kl))
  else:
    alpha = float(value)
  return {"code_scale": alpha}


def simplex_head(model_config: Any, dims: registry.Dims) -> SimplexWitness:
  """The model part ``head='simplex'``: the fixed witness with gain ``model.witness_beta``."""
  beta = float(model_config.witness_beta)
  if not beta > 0 or beta == float("inf"):
    raise ValueError(f"model.witness_beta: expected a finite gain > 0, got {beta}")
  if dims.latent_dim < dims.num_classes - 1:
    raise ValueError(f"model.latent_dim: the simplex witness needs latent_dim >= K-1 = "
                     f"{dims.num_classes - 1}, got {dims.latent_dim}")
  return SimplexWitness(num_classes=dims.num_classes, beta=beta)


def needs_simplex_head(c: ml_collections.ConfigDict) -> None:
  if c.model.head != "simplex":
    raise ValueError("mode: rst_prefit regresses the code onto the simplex witness's "
                     "analytic code; it needs --config.model.head=simplex")


def positive_teacher(t_train: np.ndarray) -> None:
  if (np.asarray(t_train) <= 0).any():
    raise ValueError("mode: rst_prefit needs a teacher without zero entries (the analytic "
                     "code takes log T); use a smoothed teacher")


registry.register("head", "simplex", simplex_head)
modes.register(modes.Mode("prefit", "code_regression", lambda c: {},
                          steps=lambda c: int(c.train.prefit_steps), data_code=PREFIT_CODE,
                          check=needs_simplex_head, check_targets=positive_teacher,
                          meta=lambda c: {"beta": float(c.model.witness_beta)}))
modes.register(modes.Mode("rst_prefit", "teacher_guided",
                          modes.guided_weights(modes.train_alpha, align=True, balance=True),
                          init="params", source="prefit", run_source=True,
                          check=needs_simplex_head))
# code_scale's value comes from the teacher's rows (target_weights); its name is declared
# here, so that a restore of this phase knows the state's weights.
modes.register(modes.Mode("prefit_alpha", "scaled_code_regression",
                          lambda c: {"code_scale": 1.0},
                          steps=lambda c: int(c.train.prefit_steps), data_code=PREFIT_CODE,
                          check=needs_simplex_head, check_targets=positive_teacher,
                          meta=lambda c: {"beta": float(c.model.witness_beta)},
                          target_weights=prefit_alpha))
modes.register(modes.Mode("rst_alpha_prefit", "teacher_guided",
                          modes.guided_weights(modes.train_alpha, align=True, balance=True),
                          init="params", source="prefit_alpha", run_source=True,
                          check=needs_simplex_head))
