"""Paper 2 (v4) on CIFAR-100: the fixed simplex witness with an unsupervised PCA-GMM
teacher of K = 100 components fitted on the training pixels before any training.

    python launch/protocol.py --config=configs/cifar100_simplex.py --seeds=5

As :mod:`certvae_jax.configs.cifar10_simplex` on ``tfds:cifar100``: latent dimension 99
(the witness reads ``mu[:K-1]``), PCA to 64 axes, GMM search over K = 100. Not trained at
full size here (no download); ``:smoke`` runs in CI on mock data.
"""

import ml_collections

from certvae_jax.configs import cifar100, is_smoke
from certvae_jax.configs.cifar10_simplex import simplex_variant


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Paper 2's CIFAR-100 setting; ``arg='smoke'`` for the CI run on mock data, ``'cpu'`` as
  for CIFAR-100."""
  return simplex_variant(cifar100.get_config(arg), components=100, pca=64,
                         smoke=is_smoke(arg, cifar100.IMAGE_ARGS))
