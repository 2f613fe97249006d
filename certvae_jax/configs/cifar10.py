"""Paper 1, appendix F.1: the CIFAR-10 sanity check (full / noalign / rescue, K = 10).

    python launch/protocol.py --config=configs/cifar10.py --seeds=3
    python launch/train.py --mode=full --config=configs/cifar10.py --config.data.data_dir=/data/tfds

The CIFAR-100 recipe (:mod:`certvae_jax.configs.cifar100`: conv encoder, latent 64,
Gaussian likelihood) on ``tfds:cifar10``, with a K = 10 GMM teacher searched on the warm-up
means. Not trained at full size on this project's machines (no download here);
``:smoke`` is the seconds-long run that CI runs on ``tfds.testing.mock_data``.
"""

import ml_collections

from certvae_jax.configs import cifar100, is_smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """CIFAR-10 settings; ``arg='smoke'`` for the CI run on mock data, ``'cpu'`` as for
  CIFAR-100."""
  c = cifar100.get_config(arg)
  c.data.source = "tfds:cifar10"
  if not is_smoke(arg, cifar100.IMAGE_ARGS):
    c.teacher.components = (10,)
    c.teacher.min_mass = 0.02       # 0.2 / K
  return c
