"""Paper 2 (v4) on natural images: CIFAR-10 with the fixed simplex witness and an
unsupervised PCA-GMM teacher fitted on the training pixels before any training.

    python launch/protocol.py --config=configs/cifar10_simplex.py --seeds=5
    python launch/protocol.py --config=configs/cifar10_simplex.py --seeds=5 --kl_stress=2,4,8

The conv model of :mod:`certvae_jax.configs.cifar10`, the witness ``softmax(beta W
mu[:K-1])`` (beta = 5; ``model.latent_dim`` must be at least K - 1, checked when the model
is built), and ``teacher.features = 'input_pca:64'`` with the GMM search over K = 10
(diagonal and full covariances). Models: the plain VAE, RST-VAE and the escape run. Not
trained at full size here (no download); ``:smoke`` runs in CI on mock data.
"""

import ml_collections

from certvae_jax.configs import cifar10, cifar100, is_smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Paper 2's CIFAR-10 setting; ``arg='smoke'`` for the CI run on mock data, ``'cpu'`` as
  for CIFAR-100."""
  return simplex_variant(cifar10.get_config(arg), components=10, pca=64,
                         smoke=is_smoke(arg, cifar100.IMAGE_ARGS))


def simplex_variant(c: ml_collections.ConfigDict, components: int, pca: int,
                    smoke: bool) -> ml_collections.ConfigDict:
  """Paper 2's witness, teacher and models on an image config (shared with CIFAR-100)."""
  c.model.head = "simplex"
  c.model.witness_beta = 5.0
  k = 10 if smoke else components
  c.model.latent_dim = max(int(c.model.latent_dim), k - 1)
  c.teacher.kind = "gmm"
  c.teacher.features = f"input_pca:{8 if smoke else pca}"
  c.teacher.components = (k,)
  c.teacher.covariance_types = ("diag",) if smoke else ("diag", "full")
  c.train.init = "fresh"
  c.train.alpha_kl = 1.0
  c.train.lambda_ts = 1.0
  c.train.lambda_bal = 0.0
  c.protocol.variants = ("vae", "full", "escape")
  c.protocol.kl_stress_variants = ("vae", "full")
  return c
