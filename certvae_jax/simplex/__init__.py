"""Paper 2: "A Simplex Witness Certificate and Escape Force for Constant Collapse in VAEs".

The theory (:mod:`~certvae_jax.simplex.theory`): the fixed simplex witness and its head,
the analytic code and its energy, the escape force; the margin-energy path of scaled
analytic codes (:mod:`~certvae_jax.simplex.path`). Paper 2's training stages
(:mod:`~certvae_jax.simplex.training`: the code-regression objective, the ``prefit`` and
``rst_prefit`` modes) register when :mod:`certvae_jax.registrations` is imported; this
package face imports only the theory, so that the model library can use the head.
"""

from certvae_jax.simplex.path import (
  MarginEnergyPath,
  balance_alpha,
  least_certifiable_alpha,
  margin_energy_path,
  tempered_alignment,
  witness_energy,
)
from certvae_jax.simplex.theory import (
  EscapeForce,
  SimplexWitness,
  alignment_at_codes,
  analytic_code,
  analytic_code_energy,
  analytic_code_unchecked,
  escape_force,
  simplex_vertices,
  witness_logits,
)

__all__ = ["EscapeForce", "MarginEnergyPath", "SimplexWitness", "alignment_at_codes",
           "balance_alpha",
           "analytic_code", "analytic_code_energy", "analytic_code_unchecked", "escape_force",
           "least_certifiable_alpha", "margin_energy_path", "simplex_vertices",
           "tempered_alignment", "witness_energy", "witness_logits"]
