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

and a mode (:mod:`certvae_jax.modes`) that names it. Nothing in the step, the loop or
the run needs to change.

Shipped:

* ``teacher_guided`` (paper 1, section 3):
  ``L = L_rec + alpha_KL KL(q(z|x) || N(0, I)) + lambda_TS L_align + lambda_bal L_bal``.
  Warm-up, ``full``, ``noalign``, ``rescue`` and paper 2's ``vae`` and RST-VAE are this
  objective with other weights.
* ``code_regression`` (paper 2, RST-prefit's first stage;
  :mod:`certvae_jax.simplex.training`).
* ``free_bits``, ``vq_vae``, ``gmvae``: paper 1's baselines
  (:mod:`certvae_jax.baseline_objectives`).

The last two groups register when :mod:`certvae_jax.registrations` is imported (the run
does).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from certvae_jax import losses, plugins
from certvae_jax.models.vae import TeacherGuidedVAE

Weights = Mapping[str, jnp.ndarray]
LossFn = Callable[[Any, Mapping[str, jnp.ndarray], jax.Array, Weights],
                  tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
EvalFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jax.Array], dict[str, jnp.ndarray]]
WitnessFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


class Objective(NamedTuple):
  """The pure functions a step and an evaluation are built from.

  Attributes:
    loss: ``(params, batch, rng, weights) -> (loss, terms)``. ``batch`` holds ``x``
      (inputs scaled to [0, 1]) and ``t`` (teacher rows, ``(B, K)``); ``weights`` maps
      each of ``weight_names`` to a traced scalar; ``terms`` are the scalars to report.
    weight_names: the loss weights this objective reads. They live in the train state,
      so a schedule or a hook may change them and a restart keeps them.
    evaluate: ``(params, x, t, rng) -> outputs`` per example, with the keys
      ``mu``, ``logvar`` (latent statistics), ``rec`` (``-log p(x|z)``), ``sq_err``
      (mean squared error of the mean reconstruction), ``kl_dim`` (KL per latent
      dimension) and ``witness_logits`` (the raw z-only witness at ``z = mu(x)``, the
      only input of the certificate; paper 1, section 2.3). Optionally ``code``: the
      latent the witness and decoder read, when it is not ``mu`` (the post-hoc head
      reads it); any other per-example outputs are kept for ``summarize``.
    init_params: ``key -> pytree``, parameters the objective owns beside the model's (a
      VQ codebook), kept in ``params['objective']``; ``None`` for none.
    summarize: ``arrays -> {name: float}``, extra split metrics from the per-example
      evaluation outputs (e.g. codebook usage); ``None`` for none.
    gate_updates: ``(updates, weights) -> updates``, applied to the optimizer's updates
      before they reach the parameters (e.g. a weight that freezes the decoder);
      ``None`` for none.
    witness: ``(params, x) -> witness logits``: the raw witness at the code the
      certificate reads, computed without the decoder (``evaluate``'s
      ``witness_logits``, alone). The guard margin and the rescue diagnostics (a
      forward-mode derivative) use it; ``None``: they fall back to ``evaluate``.
  """
  loss: LossFn
  weight_names: tuple[str, ...]
  evaluate: EvalFn
  init_params: Callable[[jax.Array], Any] | None = None
  summarize: Callable[[Mapping[str, Any]], dict[str, float]] | None = None
  gate_updates: Callable[[Any, Weights], Any] | None = None
  witness: WitnessFn | None = None

  def witness_logits(self, params: Any, x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """The raw witness's logits at the certificate's code: ``witness`` when given, else
    the whole ``evaluate`` (which also decodes; ``t`` feeds a decoder that reads it)."""
    if self.witness is not None:
      return self.witness(params, x)
    return self.evaluate(params, x, t, jax.random.PRNGKey(0))["witness_logits"]


Builder = Callable[[TeacherGuidedVAE, ml_collections.ConfigDict], Objective]
_REGISTRY = plugins.Registry("objective", hint=plugins.REGISTRATIONS_HINT)


def register(name: str) -> Callable[[Builder], Builder]:
  """Decorator: registers ``builder(model, config) -> Objective`` under ``name``."""
  def add(builder: Builder) -> Builder:
    return _REGISTRY.register(name, builder)
  return add


def names() -> tuple[str, ...]:
  return _REGISTRY.names()


def build(name: str, model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """The objective registered as ``name`` (or named by an import path) for ``model``.

  Raises:
    ValueError: an unknown name.
  """
  return _REGISTRY.get(name)(model, config)


def reconstruction_nll(config: ml_collections.ConfigDict):
  """The per-example ``-log p(x|z)`` of ``config.model`` (Bernoulli or Gaussian)."""
  return losses.reconstruction_nll(config.model.likelihood, float(config.model.gaussian_scale))


def vae_witness(model: TeacherGuidedVAE) -> WitnessFn:
  """``s(mu(x))``: the encoder mean and the head, nothing else (paper 1, section 2.3)."""

  def witness(params, x):
    v = {"params": params}
    mu, _ = model.apply(v, x, method=TeacherGuidedVAE.encode)
    return model.apply(v, mu, method=TeacherGuidedVAE.witness_logits)

  return witness


def vae_evaluation(model: TeacherGuidedVAE, nll) -> EvalFn:
  """The evaluation outputs of a Gaussian-encoder VAE with a raw z-only witness."""

  def evaluate(params, x, t, rng):
    v = {"params": params}
    mu, logvar = model.apply(v, x, method=TeacherGuidedVAE.encode)
    z = losses.reparameterize(rng, mu, logvar)
    rec = nll(model.apply(v, z, t, method=TeacherGuidedVAE.decode), x)
    mean_image = jax.nn.sigmoid(model.apply(v, mu, t, method=TeacherGuidedVAE.decode))
    return {"mu": mu, "logvar": logvar, "rec": rec,
            "sq_err": jnp.mean(jnp.square(mean_image - x), axis=-1),
            "kl_dim": losses.gaussian_kl_per_dim(mu, logvar),
            "witness_logits": model.apply(v, mu, method=TeacherGuidedVAE.witness_logits)}

  return evaluate


def guided_total(rec: jnp.ndarray, priors: Sequence[jnp.ndarray], weights: Weights,
                 t: jnp.ndarray, logits: jnp.ndarray) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The teacher-guided total (paper 1, section 3) and its witness terms:
  ``L_rec + priors + lambda_TS L_align + lambda_bal L_bal``, with ``L_align`` and
  ``L_bal`` read from the raw witness's ``logits``. ``priors`` are the weighted
  regularisers, added in order (``alpha_KL KL``; VQ-VAE's codebook and commitment).
  Returns ``(total, {"align": ..., "bal": ...})``."""
  align, bal = losses.alignment(t, logits), losses.balance(logits)
  total = rec
  for prior in priors:
    total = total + prior
  total = total + weights["lambda_ts"] * align + weights["lambda_bal"] * bal
  return total, {"align": align, "bal": bal}


def guided(model: TeacherGuidedVAE, config: ml_collections.ConfigDict,
            kl_term: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] | None = None
            ) -> Objective:
  """The teacher-guided loss; ``kl_term(mu, logvar)`` replaces the KL term when given
  (the unclamped KL is still reported as ``kl``, the replacement as ``kl_used``)."""
  nll = reconstruction_nll(config)
  align_on_mean = bool(config.train.align_on_mean)

  def loss(params, batch, rng, weights):
    x, t = batch["x"], batch["t"]
    v = {"params": params}
    mu, logvar = model.apply(v, x, method=TeacherGuidedVAE.encode)
    z = losses.reparameterize(rng, mu, logvar)
    rec = jnp.mean(nll(model.apply(v, z, t, method=TeacherGuidedVAE.decode), x))
    kl = losses.gaussian_kl(mu, logvar)
    kl_used = kl if kl_term is None else kl_term(mu, logvar)
    logits = model.apply(v, mu if align_on_mean else z, method=TeacherGuidedVAE.witness_logits)
    total, witness = guided_total(rec, [weights["alpha_kl"] * kl_used], weights, t, logits)
    terms = {"rec": rec, "kl": kl, **witness}
    if kl_term is not None:
      terms["kl_used"] = kl_used
    return total, terms

  return Objective(loss=loss, weight_names=("alpha_kl", "lambda_ts", "lambda_bal"),
                   evaluate=vae_evaluation(model, nll), witness=vae_witness(model))


@register("teacher_guided")
def teacher_guided(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """Paper 1, section 3: ELBO terms, alignment of the raw head, balance.

  ``L_align = mean_batch KL(T(x) || s(z))`` reads the witness at the sampled ``z``
  (``config.train.align_on_mean``: at ``mu``). ``lambda_TS = lambda_bal = 0`` is a plain
  VAE.
  """
  return guided(model, config)
