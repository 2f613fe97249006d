"""The certificate with plain JAX and optax: no Flax at all.

    python examples/plain_jax.py            # about 10 s on a 2-core CPU
    python examples/plain_jax.py --smoke    # seconds (what CI runs)

Parameters are a dict of arrays, the model is three functions, the teacher is fitted
with ``teacher.fit_teacher`` on the warm-up means and frozen with
``teacher.frozen``; the certificate is computed by ``certificate.certify`` on the
held-out split (paper 1, section 2.3).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from certvae_jax import certificate, teacher

K, LATENT, HIDDEN = 10, 16, 256


def init(key):
  sizes = {"enc": (64, HIDDEN), "mu": (HIDDEN, LATENT), "logvar": (HIDDEN, LATENT),
           "dec1": (LATENT, HIDDEN), "dec2": (HIDDEN, 64), "head": (LATENT, K)}
  keys = jax.random.split(key, len(sizes))
  return {name: {"w": jax.random.normal(k, shape) * np.sqrt(1.0 / shape[0]),
                 "b": jnp.zeros(shape[1])} for k, (name, shape) in zip(keys, sizes.items())}


def dense(p, x):
  return x @ p["w"] + p["b"]


def encode(params, x):
  h = jax.nn.relu(dense(params["enc"], x))
  return dense(params["mu"], h), dense(params["logvar"], h)


def decode(params, z):
  return dense(params["dec2"], jax.nn.relu(dense(params["dec1"], z)))


def witness_logits(params, z):
  """The raw witness: a linear head that sees only z."""
  return dense(params["head"], z)


def loss_fn(params, x, t, key, alpha_kl, lambda_ts):
  mu, logvar = encode(params, x)
  z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
  rec = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(decode(params, z), x), -1))
  kl = jnp.mean(jnp.sum(0.5 * (jnp.exp(logvar) + mu**2 - 1 - logvar), -1))
  align = certificate.alignment_loss_from_logits(t, witness_logits(params, z), validate=False)
  return rec + alpha_kl * kl + lambda_ts * align


def make_step(tx):
  @jax.jit
  def step(params, opt_state, x, t, key, alpha_kl, lambda_ts):
    grads = jax.grad(loss_fn)(params, x, t, key, alpha_kl, lambda_ts)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="a seconds-long run")
  a = p.parse_args()
  steps = 100 if a.smoke else 2000
  x = (load_digits().data / 16.0).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(x))
  x_train, x_test = x[order[:1400]], x[order[1400:]]
  tx = optax.adam(1e-3)
  step = make_step(tx)
  params = init(jax.random.key(0))
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)

  uniform = jnp.full((128, K), 1.0 / K)
  for i in range(steps):  # warm-up: a plain VAE (lambda_TS = 0)
    xb = x_train[rng.integers(0, len(x_train), 128)]
    params, opt_state = step(params, opt_state, xb, uniform, jax.random.key(i), 1.0, 0.0)

  warm = jax.tree.map(jnp.copy, params)
  fitted = teacher.fit_teacher(np.asarray(encode(warm, x_train)[0]), num_components=K,
                               covariance_types="diag", seeds=0)
  teacher_fn = jax.jit(teacher.frozen(lambda xb: encode(warm, xb), fitted))

  for i in range(steps):  # teacher-guided training
    xb = x_train[rng.integers(0, len(x_train), 128)]
    params, opt_state = step(params, opt_state, xb, teacher_fn(xb),
                             jax.random.key(steps + i), 4.0, 5.0)

  witness_fn = jax.jit(lambda xb: witness_logits(params, encode(params, xb)[0]))
  batches = [x_test[i:i + 128] for i in range(0, len(x_test), 128)]
  print("test:", certificate.certify(witness_fn, teacher_fn, batches,
                                           from_logits=True).summary_line())


if __name__ == "__main__":
  main()
