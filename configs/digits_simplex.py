"""Paper 2 on digits: the fixed simplex witness with a label-smoothed teacher.

A thin file for the commands in the README (`--config=configs/digits_simplex.py[:smoke]`); the
config itself ships in the package as ``certvae_jax/configs/digits_simplex.py``, so an installed
package also finds it as ``--config=digits_simplex``.
"""

from certvae_jax.configs.digits_simplex import get_config  # noqa: F401  (the config-file interface)
