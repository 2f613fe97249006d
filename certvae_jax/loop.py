"""Moved to :mod:`certvae_jax.training.loop` (0.3); this alias is removed in 0.4."""

import sys
import warnings

from certvae_jax.training import loop as _moved

warnings.warn("certvae_jax.loop moved to certvae_jax.training.loop; the old path is removed in "
              "0.4", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
