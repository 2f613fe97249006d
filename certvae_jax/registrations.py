"""The one place where built-in plug-ins defined outside their registry's module register.

Plain imports, so the import graph shows them (no ``importlib``): paper 1's baseline
objectives (``free_bits``, ``vq_vae``, ``gmvae``; :mod:`certvae_jax.baseline_objectives`).
The run (:mod:`certvae_jax.train`) imports this module; code that builds those
objectives by name without a run imports it too.
"""

from certvae_jax import baseline_objectives  # noqa: F401  (registers on import)
