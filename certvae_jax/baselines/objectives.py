"""The objectives of paper 1's baselines (section 4.3, table 3; appendix C).

Each keeps the raw z-only head (so the certificate can be read) and its balance term;
the modes (:mod:`certvae_jax.training.modes`) never align it. Registered on import of
:mod:`certvae_jax.objectives`:

* ``free_bits``: the teacher-guided loss with the free-bits KL (Kingma et al. 2016);
* ``vq_vae``: VQ-VAE (van den Oord et al. 2017); owns the codebook;
* ``gmvae``: a minimal Gaussian-mixture VAE (after Dilokthanakul et al. 2016); owns the
  mixture's parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from certvae_jax.models.vae import TeacherGuidedVAE
from certvae_jax.objectives import (
  Objective,
  guided,
  guided_total,
  reconstruction_nll,
  register,
  terms as losses,
)


def free_bits_kl(mu: jnp.ndarray, logvar: jnp.ndarray, nats: float) -> jnp.ndarray:
  """Free bits (Kingma et al. 2016, "Improved variational inference with inverse
  autoregressive flow", eq. 15): ``sum_d max(lambda, KL_d)``, with ``KL_d`` the KL of
  latent dimension ``d`` averaged over the batch *before* the clamp. A dimension below
  ``lambda`` nats gets no gradient from the KL term."""
  kl_d = jnp.mean(losses.gaussian_kl_per_dim(mu, logvar), axis=0)
  return jnp.sum(jnp.maximum(kl_d, nats))


@register("free_bits")
def free_bits(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """The teacher-guided loss with the free-bits KL of ``config.baselines.free_bits``
  nats per dimension (paper 1, table 3's free-bits baseline)."""
  nats = float(config.baselines.free_bits)
  return guided(model, config, lambda mu, logvar: free_bits_kl(mu, logvar, nats))


def quantize(z_e: jnp.ndarray, codebook: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The nearest code of each row (squared Euclidean distance): ``(e, index)``."""
  dist = (jnp.sum(jnp.square(z_e), -1, keepdims=True) - 2.0 * z_e @ codebook.T
          + jnp.sum(jnp.square(codebook), -1)[None, :])
  index = jnp.argmin(dist, axis=-1)
  return codebook[index], index


def vq_terms(z_e: jnp.ndarray, e: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """VQ-VAE (van den Oord et al. 2017, eq. 3): the straight-through code
  ``z_q = z_e + sg[e - z_e]`` (the decoder's gradient passes to the encoder unchanged),
  the codebook loss ``||sg[z_e] - e||^2`` and the commitment ``||z_e - sg[e]||^2``, both
  averaged over rows and dimensions so that they do not scale with the batch."""
  sg = jax.lax.stop_gradient
  z_q = z_e + sg(e - z_e)
  return z_q, jnp.mean(jnp.square(sg(z_e) - e)), jnp.mean(jnp.square(z_e - sg(e)))


@register("vq_vae")
def vq_vae(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """VQ-VAE (van den Oord et al. 2017) with the raw z-only head: paper 1, table 3.

  The encoder's mean is ``z_e``; its nearest of ``config.baselines.vq_codes`` codes
  (0: the teacher's K) is the code ``z_q`` that the decoder *and* the raw head read, so a
  constant code forces a constant head. Loss: reconstruction + codebook loss +
  ``baselines.vq_commitment`` x commitment + ``lambda_TS`` alignment + ``lambda_bal``
  balance. The codebook (``params['objective']['codebook']``) starts from N(0, 1), the
  prior the warm-up's means were pulled towards. Evaluation: ``mu`` is ``z_e`` (active
  units and E||mu||^2 are computed on it), ``code`` is ``z_q``, ``kl_dim`` is zero (a
  uniform prior over codes makes the KL the constant log of their number), and the
  split metrics add the codebook perplexity and the number of codes used.
  """
  nll = reconstruction_nll(config)
  beta = float(config.baselines.vq_commitment)
  latent = int(config.model.latent_dim)

  def codes(params):
    return params["objective"]["codebook"]

  def init_params(key):
    k = int(config.baselines.vq_codes) or model.head.num_classes
    return {"codebook": jax.random.normal(key, (k, latent))}

  def forward(params, x):
    v = {"params": params}
    z_e, _ = model.apply(v, x, method=TeacherGuidedVAE.encode)
    e, index = quantize(z_e, codes(params))
    z_q, codebook_loss, commitment = vq_terms(z_e, e)
    return v, z_e, z_q, index, codebook_loss, commitment

  def loss(params, batch, rng, weights):
    del rng
    x, t = batch["x"], batch["t"]
    v, _, z_q, _, codebook_loss, commitment = forward(params, x)
    rec = jnp.mean(nll(model.apply(v, z_q, t, method=TeacherGuidedVAE.decode), x))
    logits = model.apply(v, z_q, method=TeacherGuidedVAE.witness_logits)
    total, witness = guided_total(rec, [codebook_loss, beta * commitment], weights, t, logits)
    return total, {"rec": rec, "codebook": codebook_loss, "commitment": commitment, **witness}

  def evaluate(params, x, t, rng):
    del rng
    v, z_e, z_q, index, _, _ = forward(params, x)
    out = model.apply(v, z_q, t, method=TeacherGuidedVAE.decode)
    return {"mu": z_e, "logvar": jnp.zeros_like(z_e), "rec": nll(out, x),
            "sq_err": jnp.mean(jnp.square(jax.nn.sigmoid(out) - x), axis=-1),
            "kl_dim": jnp.zeros_like(z_e), "code": z_q, "code_index": index,
            "witness_logits": model.apply(v, z_q, method=TeacherGuidedVAE.witness_logits)}

  def summarize(arrays):
    counts = np.bincount(np.asarray(arrays["code_index"]).ravel())
    p = counts[counts > 0] / counts.sum()
    return {"codebook_perplexity": float(np.exp(-np.sum(p * np.log(p)))),
            "codes_used": int((counts > 0).sum())}

  def witness(params, x):
    v, _, z_q, _, _, _ = forward(params, x)
    return model.apply(v, z_q, method=TeacherGuidedVAE.witness_logits)

  return Objective(loss=loss, weight_names=("lambda_ts", "lambda_bal"), evaluate=evaluate,
                   init_params=init_params, summarize=summarize, witness=witness)


def gmvae_kl(q_logits: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray,
             offset: jnp.ndarray, prior_mu: jnp.ndarray, prior_logvar: jnp.ndarray
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The two KL terms of the minimal GMVAE's ELBO, per example and latent dimension / per
  example: ``sum_y q(y|x) KL(q(z|x,y) || p(z|y))`` and ``KL(q(y|x) || U)``.

  ``q(z|x,y) = N(mu(x) + offset_y, diag exp(logvar(x)))``; ``p(z|y) = N(prior_mu_y, diag
  exp(prior_logvar_y))``; ``p(y)`` uniform over the K components.
  """
  q = jax.nn.softmax(q_logits, axis=-1)                                # (B, K)
  m = mu[:, None, :] + offset[None]                                    # (B, K, d)
  kl = 0.5 * (prior_logvar[None] - logvar[:, None, :]
              + (jnp.exp(logvar)[:, None, :] + jnp.square(m - prior_mu[None]))
              / jnp.exp(prior_logvar)[None] - 1.0)
  k = q_logits.shape[-1]
  kl_y = jnp.sum(q * (jax.nn.log_softmax(q_logits, axis=-1) + jnp.log(k)), axis=-1)
  return jnp.einsum("bk,bkd->bd", q, kl), kl_y


@register("gmvae")
def gmvae(model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """A minimal GMVAE (after Dilokthanakul et al. 2016), with the raw z-only head: paper 1,
  table 3.

  ``q(y|x)`` is categorical with logits linear in the encoder mean; ``q(z|x,y)`` is the
  encoder's Gaussian shifted by a learned offset per component; ``p(z|y)`` is a learned
  Gaussian per component and ``p(y)`` uniform over ``config.baselines.gmvae_components``
  components (0: the teacher's K). The ELBO marginalises ``y`` exactly (one decoder pass
  per component, no Gumbel sampling):
  ``sum_y q(y|x) [E log p(x|z_y) + KL(q(z|x,y) || p(z|y))] + KL(q(y|x) || U)``, the KL
  terms weighted by ``alpha_KL``. The raw head (and the post-hoc head) reads the
  posterior mean of ``z``, ``mu(x) + sum_y q(y|x) offset_y``, which is also ``mu`` for active
  units and E||mu||^2; ``kl_dim`` is the first KL term per dimension, and the split
  metrics add the categorical KL (``kl_categorical``).
  """
  nll = reconstruction_nll(config)
  latent = int(config.model.latent_dim)

  def components():
    return int(config.baselines.gmvae_components) or model.head.num_classes

  def init_params(key):
    k1, k2 = jax.random.split(key)
    k = components()
    return {"q_kernel": 0.01 * jax.random.normal(k1, (latent, k)), "q_bias": jnp.zeros(k),
            "offset": jnp.zeros((k, latent)), "prior_mu": jax.random.normal(k2, (k, latent)),
            "prior_logvar": jnp.zeros((k, latent))}

  def posterior(params, x):
    """``q(y|x)``'s logits, the encoder's Gaussian and the posterior mean of ``z``."""
    own = params["objective"]
    mu, logvar = model.apply({"params": params}, x, method=TeacherGuidedVAE.encode)
    q_logits = mu @ own["q_kernel"] + own["q_bias"]
    return q_logits, mu, logvar, mu + jax.nn.softmax(q_logits, axis=-1) @ own["offset"]

  def terms(params, x, t, eps):
    v, own = {"params": params}, params["objective"]
    q_logits, mu, logvar, code = posterior(params, x)
    kl_z, kl_y = gmvae_kl(q_logits, mu, logvar, own["offset"], own["prior_mu"],
                          own["prior_logvar"])
    q = jax.nn.softmax(q_logits, axis=-1)
    b, k = q.shape
    # One sample per component, sharing eps: z_y = mu + offset_y + sigma * eps.
    z = mu[:, None, :] + own["offset"][None] + (jnp.exp(0.5 * logvar) * eps)[:, None, :]
    t_rep = jnp.repeat(t, k, axis=0)
    out = model.apply(v, z.reshape(b * k, -1), t_rep, method=TeacherGuidedVAE.decode)
    rec = jnp.sum(q * nll(out, jnp.repeat(x, k, axis=0)).reshape(b, k), axis=-1)
    return v, mu, logvar, code, rec, kl_z, kl_y

  def loss(params, batch, rng, weights):
    x, t = batch["x"], batch["t"]
    eps = jax.random.normal(rng, (x.shape[0], latent))
    v, _, _, code, rec, kl_z, kl_y = terms(params, x, t, eps)
    logits = model.apply(v, code, method=TeacherGuidedVAE.witness_logits)
    kl = jnp.mean(jnp.sum(kl_z, axis=-1) + kl_y)
    rec = jnp.mean(rec)
    total, witness = guided_total(rec, [weights["alpha_kl"] * kl], weights, t, logits)
    return total, {"rec": rec, "kl": kl, "kl_categorical": jnp.mean(kl_y), **witness}

  def evaluate(params, x, t, rng):
    eps = jax.random.normal(rng, (x.shape[0], latent))
    v, _, logvar, code, rec, kl_z, kl_y = terms(params, x, t, eps)
    mean_image = jax.nn.sigmoid(model.apply(v, code, t, method=TeacherGuidedVAE.decode))
    return {"mu": code, "logvar": logvar, "rec": rec, "kl_dim": kl_z, "kl_y": kl_y,
            "sq_err": jnp.mean(jnp.square(mean_image - x), axis=-1),
            "witness_logits": model.apply(v, code, method=TeacherGuidedVAE.witness_logits)}

  def summarize(arrays):
    return {"kl_categorical": float(np.mean(arrays["kl_y"], dtype=np.float64))}

  def witness(params, x):
    code = posterior(params, x)[3]
    return model.apply({"params": params}, code, method=TeacherGuidedVAE.witness_logits)

  return Objective(loss=loss, weight_names=("alpha_kl", "lambda_ts", "lambda_bal"),
                   evaluate=evaluate, init_params=init_params, summarize=summarize,
                   witness=witness)
