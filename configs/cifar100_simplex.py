"""A thin file for the commands in the README (`--config=configs/cifar100_simplex.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/cifar100_simplex.py``, so an installed
package also finds it as ``--config=cifar100_simplex``.
"""

from certvae_jax.configs.cifar100_simplex import get_config  # noqa: F401  (the config-file interface)
