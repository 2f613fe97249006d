"""Paper 1, section 4.2: Tiny-ImageNet-200 (64x64) with the fixed-target protocol (K = 200).

A thin file for the commands in the README (`--config=configs/tiny_imagenet.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/tiny_imagenet.py``, so an installed
package also finds it as ``--config=tiny_imagenet``.
"""

from certvae_jax.configs.tiny_imagenet import get_config  # noqa: F401  (the config-file interface)
