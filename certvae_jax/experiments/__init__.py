"""The papers' experiments over seeds, on top of the run: the tables and the report.

The protocols (:mod:`~certvae_jax.experiments.protocol`: paper 1's prevention ->
collapse -> rescue, paper 2's table and KL stress; its public path is
:mod:`certvae_jax.protocol`), paper 1's baselines table
(:mod:`~certvae_jax.experiments.baselines`), the report page of a protocol directory
(:mod:`~certvae_jax.experiments.report_page`) and its figures
(:mod:`~certvae_jax.experiments.figures`, matplotlib only here).
"""

from certvae_jax.experiments.baselines import baselines_table, run_baselines
from certvae_jax.experiments.protocol import run_kl_stress, run_protocol
from certvae_jax.experiments.report_page import collect, render

__all__ = ["baselines_table", "collect", "render", "run_baselines", "run_kl_stress",
           "run_protocol"]
