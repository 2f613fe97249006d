"""Moved to :mod:`certvae_jax.training.modes` (0.3); this alias is removed in 0.4."""

import sys
import warnings

from certvae_jax.training import modes as _moved

warnings.warn("certvae_jax.modes moved to certvae_jax.training.modes; the old path is removed in "
              "0.4", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
