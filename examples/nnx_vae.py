"""The certificate in your own Flax NNX VAE, without certvae_jax's training machinery.

    python examples/nnx_vae.py            # about a minute on a 2-core CPU
    python examples/nnx_vae.py --smoke    # seconds (what CI runs)

1. Warm up a plain VAE on scikit-learn's digits (written here from scratch in NNX).
2. Fit a GMM teacher on its encoder means with ``teacher.fit_teacher`` and freeze it
   with the warm-up encoder: ``T(x) = gmm(mu_warmup(x))`` (paper 1, section 2.2).
3. Train with the alignment term ``lambda_TS KL(T(x) || s(z))`` on a linear z-only head.
4. Certify on the held-out split with ``certificate.certify``: ``G_tau > 0`` proves the
   code is not constant (paper 1, Theorem 1).
"""

import argparse
import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

from certvae_jax import certificate, teacher

K, LATENT = 10, 16


class VAE(nnx.Module):
  """MLP encoder/decoder and a raw witness head that reads only z."""

  def __init__(self, rngs: nnx.Rngs):
    self.enc = nnx.Linear(64, 256, rngs=rngs)
    self.mu = nnx.Linear(256, LATENT, rngs=rngs)
    self.logvar = nnx.Linear(256, LATENT, rngs=rngs)
    self.dec1 = nnx.Linear(LATENT, 256, rngs=rngs)
    self.dec2 = nnx.Linear(256, 64, rngs=rngs)
    self.head = nnx.Linear(LATENT, K, rngs=rngs)

  def encode(self, x):
    h = nnx.relu(self.enc(x))
    return self.mu(h), self.logvar(h)

  def decode(self, z):
    return self.dec2(nnx.relu(self.dec1(z)))


def loss_fn(model, x, t, key, alpha_kl, lambda_ts):
  mu, logvar = model.encode(x)
  z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
  rec = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(model.decode(z), x), -1))
  kl = jnp.mean(jnp.sum(0.5 * (jnp.exp(logvar) + mu**2 - 1 - logvar), -1))
  align = jnp.mean(optax.softmax_cross_entropy(model.head(z), t)
                   + jnp.sum(jax.scipy.special.xlogy(t, t), -1))  # KL(T || s(z))
  return rec + alpha_kl * kl + lambda_ts * align


@nnx.jit(static_argnames=("alpha_kl", "lambda_ts"))
def train_step(model, optimizer, x, t, key, alpha_kl, lambda_ts):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, t, key, alpha_kl, lambda_ts)
  optimizer.update(model, grads)
  return loss


def train(model, optimizer, x, targets, steps, alpha_kl, lambda_ts, seed):
  rng = np.random.default_rng(seed)
  for step in range(steps):
    idx = rng.integers(0, len(x), 128)
    t = targets(x[idx]) if callable(targets) else targets[idx]
    train_step(model, optimizer, x[idx], t, jax.random.key(step + 1000 * seed),
               alpha_kl, lambda_ts)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="a seconds-long run")
  a = p.parse_args()
  steps = 100 if a.smoke else 2000
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(x))
  x_train, x_test = x[order[:1400]], x[order[1400:]]

  model = VAE(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  uniform = np.full((len(x_train), K), 1.0 / K, np.float32)
  train(model, optimizer, x_train, uniform, steps, alpha_kl=1.0, lambda_ts=0.0, seed=0)

  warm = copy.deepcopy(model)  # the teacher keeps a frozen snapshot of the warm-up encoder
  fitted = teacher.fit_teacher(np.asarray(warm.encode(x_train)[0]), num_components=K,
                               covariance_types="diag", seeds=0)
  teacher_fn = jax.jit(teacher.frozen(warm.encode, fitted))
  print(f"teacher: I_T={fitted.scores['teacher_mi']:.3f} on the warm-up means"
        + (" (stress case)" if fitted.stress_case else ""))

  train(model, optimizer, x_train, teacher_fn, steps, alpha_kl=4.0, lambda_ts=5.0, seed=1)

  witness_fn = jax.jit(lambda xb: model.head(model.encode(xb)[0]))  # s(mu(x)): z only
  batches = [x_test[i:i + 128] for i in range(0, len(x_test), 128)]
  print("test:", certificate.certify(witness_fn, teacher_fn, batches,
                                           from_logits=True).summary_line())


if __name__ == "__main__":
  main()
