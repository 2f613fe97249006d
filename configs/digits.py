"""Paper 1's protocol on scikit-learn's bundled digits: the default config.

A thin file for the commands in the README (`--config=configs/digits.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/digits.py``, so an installed
package also finds it as ``--config=digits``.
"""

from certvae_jax.configs.digits import get_config  # noqa: F401  (the config-file interface)
