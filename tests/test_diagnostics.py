"""Host diagnostics (none of them a certificate) against direct references."""

import numpy as np
import pytest
from scipy.special import logsumexp

from certvae_jax.evaluation import diagnostics


def _mi_reference(mu, logvar, batch_size, seed=0):
  """He et al.'s minibatch estimate written directly with a (b, b, d) array."""
  rng = np.random.default_rng(seed)
  total = 0.0
  for start in range(0, len(mu), batch_size):
    m, lv = mu[start:start + batch_size], logvar[start:start + batch_size]
    b, d = m.shape
    z = m + np.exp(0.5 * lv) * rng.standard_normal(m.shape)
    neg_entropy = np.mean(-0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(1.0 + lv, axis=-1))
    log_q = np.array([[-0.5 * (d * np.log(2 * np.pi) + lv[j].sum()
                               + np.sum((z[i] - m[j]) ** 2 / np.exp(lv[j])))
                       for j in range(b)] for i in range(b)])
    total += b * (neg_entropy - np.mean(logsumexp(log_q, axis=1) - np.log(b)))
  return total / len(mu)


@pytest.mark.parametrize("n,d,batch", [(50, 3, 16), (37, 8, 37), (10, 1, 4)])
def test_mutual_information_estimate_matches_direct_formula(n, d, batch):
  rng = np.random.default_rng(n)
  mu = rng.normal(0, 2, (n, d))
  logvar = rng.normal(-1, 0.5, (n, d))
  got = diagnostics.mutual_information_estimate(mu, logvar, batch)
  assert got == pytest.approx(_mi_reference(mu, logvar, batch), rel=1e-9, abs=1e-9)


def test_mutual_information_estimate_bounds():
  rng = np.random.default_rng(0)
  # Separated posteriors reach the log(b) ceiling; one shared posterior gives 0. Both up
  # to the sampling noise of one z per x (about 0.1 nats here).
  far = rng.normal(0, 100, (256, 4))
  assert diagnostics.mutual_information_estimate(far, np.full((256, 4), -4.0), 256) == (
      pytest.approx(np.log(256), abs=0.3))
  same = np.zeros((256, 4))
  assert diagnostics.mutual_information_estimate(same, same, 256) == pytest.approx(0.0, abs=0.3)


def test_active_units_and_psnr():
  mu = np.stack([np.linspace(-1, 1, 100), np.full(100, 3.0), 0.05 * np.linspace(-1, 1, 100)], 1)
  assert diagnostics.active_units(mu, 0.01) == 1
  assert diagnostics.psnr(np.full(10, 0.01)) == pytest.approx(20.0)
  assert diagnostics.psnr(np.zeros(3)) == float("inf")
