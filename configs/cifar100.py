"""Paper 1, section 4.1: CIFAR-100 with per-seed teacher search (K = 100).

A thin file for the commands in the README (`--config=configs/cifar100.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/cifar100.py``, so an installed
package also finds it as ``--config=cifar100``.
"""

from certvae_jax.configs.cifar100 import get_config  # noqa: F401  (the config-file interface)
