"""Moved to :mod:`certvae_jax.training.hooks` (0.3); this alias is removed in 0.4."""

import sys
import warnings

from certvae_jax.training import hooks as _moved

warnings.warn("certvae_jax.hooks moved to certvae_jax.training.hooks; the old path is removed in "
              "0.4", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
