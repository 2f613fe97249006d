"""The one place where built-in plug-ins defined outside their registry's module register.

Plain imports, so the import graph shows them (no ``importlib``): paper 1's baseline
objectives (``free_bits``, ``vq_vae``, ``gmvae``; :mod:`certvae_jax.baselines.objectives`),
paper 2's RST-prefit (objective ``code_regression``, modes ``prefit`` and
``rst_prefit``; :mod:`certvae_jax.simplex.training`), paper 2's escape runs (mode ``escape``
and its phase extension; :mod:`certvae_jax.simplex.escape`), and two phase extensions: the
training guard (:mod:`certvae_jax.guard`) and the shared-safe used head
(:mod:`certvae_jax.guard.used_head`). The run (:mod:`certvae_jax.train`) imports this
module; code that builds those objectives or modes by name without a run imports it too.
"""

from certvae_jax import baselines  # noqa: F401  (registers on import)
from certvae_jax.guard import EXTENSION as GUARD, used_head
from certvae_jax.simplex import escape, training  # noqa: F401  (training registers on import)
from certvae_jax.training import extensions, modes

# The used head first: the guard's objective transform passes on the weights of the
# objective it is given, which then include the used head's.
extensions.register("used_head", used_head.EXTENSION)
extensions.register("guard", GUARD)
modes.register(escape.ESCAPE)
extensions.register("escape", escape.EXTENSION)
