"""Paper 1's baselines (section 4.3, table 3 and appendix C), as plug-ins of the run.

Their modes (:mod:`~certvae_jax.baselines.modes`: ``vanilla_vae``, ``beta_vae``,
``kl_anneal``, ``free_bits``, ``vq_vae``, ``gmvae``) and the objectives of the last
three (:mod:`~certvae_jax.baselines.objectives`) register when this package is imported
(:mod:`certvae_jax.registrations` does). The table over seeds is
:mod:`certvae_jax.experiments.baselines`.
"""

from certvae_jax.baselines.modes import anneal_steps, kl_anneal_schedule
from certvae_jax.baselines.objectives import free_bits, gmvae, vq_vae

__all__ = ["anneal_steps", "free_bits", "gmvae", "kl_anneal_schedule", "vq_vae"]
