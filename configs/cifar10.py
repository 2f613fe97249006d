"""A thin file for the commands in the README (`--config=configs/cifar10.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/cifar10.py``, so an installed
package also finds it as ``--config=cifar10``.
"""

from certvae_jax.configs.cifar10 import get_config  # noqa: F401  (the config-file interface)
