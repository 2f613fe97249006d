"""Evaluation of a trained state: what the summaries report beside the certificate.

A split's certificate and diagnostics over the device mesh, and the final analyses
(:mod:`~certvae_jax.evaluation.splits`); PSNR, active units, the minibatch MI estimate
and the linear probe (:mod:`~certvae_jax.evaluation.diagnostics`); the post-hoc linear
head and the collapse verdict (:mod:`~certvae_jax.evaluation.posthoc`, paper 1,
section 4.3); the reconstruction-side check ``T(x_hat)`` (:mod:`~certvae_jax.evaluation.
recon_check`, appendix I); and appendix H's rescue diagnostics
(:mod:`~certvae_jax.evaluation.rescue_diagnostics`).
"""

from certvae_jax.evaluation.diagnostics import active_units, mutual_information_estimate, psnr
from certvae_jax.evaluation.posthoc import collapse, posthoc_metrics
from certvae_jax.evaluation.recon_check import ReconstructionCheck
from certvae_jax.evaluation.rescue_diagnostics import rescue_diagnostics
from certvae_jax.evaluation.splits import evaluate_split, evaluate_splits, final_analyses

__all__ = ["ReconstructionCheck", "active_units", "collapse", "evaluate_split", "evaluate_splits",
           "final_analyses", "mutual_information_estimate", "posthoc_metrics", "psnr",
           "rescue_diagnostics"]
