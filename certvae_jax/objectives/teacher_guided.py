"""The teacher-guided objective (paper 1, section 3) and the parts other objectives reuse.

``L = L_rec + alpha_KL KL(q(z|x) || N(0, I)) + lambda_TS L_align + lambda_bal L_bal``;
warm-up, ``full``, ``noalign``, ``rescue`` and paper 2's ``vae`` and RST-VAE are this
objective with other weights.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from certvae_jax.models.vae import TeacherGuidedVAE
from certvae_jax.objectives import terms as losses
from certvae_jax.objectives.base import EvalFn, Objective, Weights, WitnessFn, register
from certvae_jax.objectives.used_head import USED_HEAD, alignment_logits


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


def vae_latents(model: TeacherGuidedVAE) -> EvalFn:
  """The decoder-free evaluation outputs of a Gaussian-encoder VAE with a raw z-only
  witness: ``mu``, ``logvar``, ``kl_dim`` and ``witness_logits``."""

  def latents(params, x, t, rng):
    del t, rng
    v = {"params": params}
    mu, logvar = model.apply(v, x, method=TeacherGuidedVAE.encode)
    return {"mu": mu, "logvar": logvar, "kl_dim": losses.gaussian_kl_per_dim(mu, logvar),
            "witness_logits": model.apply(v, mu, method=TeacherGuidedVAE.witness_logits)}

  return latents


def vae_evaluation(model: TeacherGuidedVAE, nll) -> EvalFn:
  """The evaluation outputs of a Gaussian-encoder VAE with a raw z-only witness:
  :func:`vae_latents`' and the decoder's (``rec`` at a sampled ``z``, ``sq_err`` of the
  mean reconstruction)."""
  latents = vae_latents(model)

  def evaluate(params, x, t, rng):
    out = latents(params, x, t, rng)
    v = {"params": params}
    z = losses.reparameterize(rng, out["mu"], out["logvar"])
    mean_image = jax.nn.sigmoid(model.apply(v, out["mu"], t, method=TeacherGuidedVAE.decode))
    return dict(out, rec=nll(model.apply(v, z, t, method=TeacherGuidedVAE.decode), x),
                sq_err=jnp.mean(jnp.square(mean_image - x), axis=-1))

  return evaluate


def guided_total(rec: jnp.ndarray, priors: Sequence[jnp.ndarray], weights: Weights,
                 t: jnp.ndarray, logits: jnp.ndarray, params: Any = None
                 ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The teacher-guided total (paper 1, section 3) and its witness terms:
  ``L_rec + priors + lambda_TS L_align + lambda_bal L_bal``, with ``L_align`` and
  ``L_bal`` read from the raw witness's ``logits``. ``priors`` are the weighted
  regularisers, added in order (``alpha_KL KL``; VQ-VAE's codebook and commitment).

  With ``params`` and the weight ``used_head`` (a phase with the shared-safe used head,
  :mod:`certvae_jax.objectives.used_head`), ``L_align`` reads the used head while that
  weight is on; ``align`` always reports the raw head's alignment, ``used_align`` the one
  in the total. Returns ``(total, {"align": ..., "bal": ...[, "used_align": ...]})``."""
  align, bal = losses.alignment(t, logits), losses.balance(logits)
  terms = {"align": align, "bal": bal}
  trained = align
  if params is not None and USED_HEAD in weights:
    trained = terms["used_align"] = losses.alignment(t, alignment_logits(params, logits,
                                                                         weights))
  total = rec
  for prior in priors:
    total = total + prior
  total = total + weights["lambda_ts"] * trained + weights["lambda_bal"] * bal
  return total, terms


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
    total, witness = guided_total(rec, [weights["alpha_kl"] * kl_used], weights, t, logits,
                                  params)
    terms = {"rec": rec, "kl": kl, **witness}
    if kl_term is not None:
      terms["kl_used"] = kl_used
    return total, terms

  return Objective(loss=loss, weight_names=("alpha_kl", "lambda_ts", "lambda_bal"),
                   evaluate=vae_evaluation(model, nll), witness=vae_witness(model),
                   used_head=True, evaluate_latents=vae_latents(model))


@register("teacher_guided")
def teacher_guided(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """Paper 1, section 3: ELBO terms, alignment of the raw head, balance.

  ``L_align = mean_batch KL(T(x) || s(z))`` reads the witness at the sampled ``z``
  (``config.train.align_on_mean``: at ``mu``). ``lambda_TS = lambda_bal = 0`` is a plain
  VAE.
  """
  return guided(model, config)
