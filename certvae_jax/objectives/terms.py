"""Terms of the teacher-guided objective (paper 1, section 3).

``L = L_rec + alpha_KL * KL(q(z|x) || N(0, I)) + lambda_TS * L_align + lambda_bal * L_bal``

All functions are pure and jit-able; each returns a batch mean unless its name says
"per_example" or "per_dim".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from certvae_jax import certificate


def bernoulli_nll_per_example(logits: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """``-log p(x|z)`` for Bernoulli pixels with means in [0, 1], summed over features."""
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)


def gaussian_nll_per_example(out: jnp.ndarray, x: jnp.ndarray, scale: float) -> jnp.ndarray:
  """``-log N(x | sigmoid(out), scale^2)`` summed over features (fixed scale).

  The mean is ``sigmoid(out)`` so that it stays in [0, 1] like the data.
  """
  mean = jax.nn.sigmoid(out)
  return jnp.sum(0.5 * jnp.square((x - mean) / scale) + jnp.log(scale)
                 + 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def reconstruction_nll(likelihood: str, scale: float = 0.1):
  """The per-example ``-log p(x|z)`` of ``config.model.likelihood`` (paper 1, section 3).

  Raises:
    ValueError: an unknown likelihood or a non-positive scale.
  """
  if likelihood == "bernoulli":
    return bernoulli_nll_per_example
  if likelihood == "gaussian":
    if not scale > 0:
      raise ValueError(f"model.gaussian_scale: expected > 0, got {scale}")
    return lambda out, x: gaussian_nll_per_example(out, x, scale)
  raise ValueError(f"model.likelihood: unknown {likelihood!r}; expected 'bernoulli' or "
                   "'gaussian'")


def gaussian_kl_per_dim(mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """``KL(N(mu, exp(logvar)) || N(0, 1))`` per example and latent dimension."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def gaussian_kl(mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """Batch mean of ``KL(q(z|x) || N(0, I))`` summed over latent dimensions."""
  return jnp.mean(jnp.sum(gaussian_kl_per_dim(mu, logvar), axis=-1))


def reparameterize(rng: jax.Array, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """A sample ``z = mu + exp(logvar / 2) * eps``."""
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)


def alignment(teacher: jnp.ndarray, witness_logits: jnp.ndarray) -> jnp.ndarray:
  """``L_align = mean_batch KL(T(x) || s(z))`` on the raw head (paper 1, eq. 5).

  The same quantity as the certificate's ``L_TS``, computed stably from logits.
  """
  return certificate.alignment_loss_from_logits(teacher, witness_logits, validate=False)


def balance(witness_logits: jnp.ndarray) -> jnp.ndarray:
  """``L_bal = KL(sbar_batch || uniform) = log K - H(sbar)`` (paper 1, appendix G).

  Discourages a witness that uses few classes; not part of the theorem.
  """
  sbar = jnp.mean(jax.nn.softmax(witness_logits, axis=-1), axis=0)
  k = witness_logits.shape[-1]
  return jnp.log(k) + jnp.sum(jax.scipy.special.xlogy(sbar, sbar))
