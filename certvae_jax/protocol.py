"""The papers' protocols over seeds, at their public path (the implementation is
:mod:`certvae_jax.experiments.protocol`)."""

from certvae_jax.experiments.protocol import (
  run_kl_stress,
  run_protocol,
  seed_workdir,
  table_stem,
)
from certvae_jax.experiments.tables import kl_stress_table, markdown_table, paper2_table

__all__ = ["kl_stress_table", "markdown_table", "paper2_table", "run_kl_stress", "run_protocol",
           "seed_workdir", "table_stem"]
