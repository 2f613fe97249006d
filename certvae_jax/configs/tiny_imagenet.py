"""Paper 1, section 4.2: Tiny-ImageNet-200 (64x64) with the fixed-target protocol (K = 200).

    python launch/protocol.py --config=configs/tiny_imagenet.py --seeds=3   # target=fixed

Tiny-ImageNet-200 is not in the TFDS catalog, so this config reads an ``.npz`` you make
once from the official archive (tiny-imagenet-200.zip): ``x`` uint8 (100000, 64, 64, 3)
and ``y`` from ``train/``, ``x_test`` (10000, 64, 64, 3) and ``y_test`` from ``val/``
(labels from ``val_annotations.txt``, class ids in ``wnids.txt`` order). Point to it with
``--config.data.source=npz:/path/tiny_imagenet_200.npz``. Conv encoder 32-64-128-256-512
(stride 2), latent 128, Gaussian likelihood, per-seed GMM search with K = 200, then the
protocol's variants against the cached targets T_fix (``protocol.target = 'fixed'``).
Not run at full scale on this project's machines. ``:smoke`` runs on a small synthetic
npz in CI.
"""

import ml_collections

from certvae_jax.configs import cifar100, is_smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Tiny-ImageNet-200 settings; ``arg='smoke'`` for the CI run, ``'cpu'`` as for
  CIFAR-100."""
  c = cifar100.get_config(None)
  c.data.source = "npz:data/tiny_imagenet_200.npz"
  c.model.conv_channels = (32, 64, 128, 256, 512)
  c.model.latent_dim = 128
  c.teacher.components = (200,)
  c.teacher.min_mass = 0.001        # 0.2 / K
  c.protocol.target = "fixed"
  if is_smoke(arg, cifar100.IMAGE_ARGS):
    cifar100._smoke(c)  # pylint: disable=protected-access
  if arg == "cpu":
    cifar100.cpu_evaluation(c)
  return c
