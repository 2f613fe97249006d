"""The certificate against constant collapse (paper 1, section 2.3; Lemma 1, Theorem 1).

Pure functions on probability arrays, with no model code: the closed forms
(:mod:`~certvae_jax.certificate.core`), the report of one evaluation set
(:mod:`~certvae_jax.certificate.verdict`), mergeable one-pass statistics
(:mod:`~certvae_jax.certificate.stats`), population lower bounds on the margin
(:mod:`~certvae_jax.certificate.bounds`), coarser properties of the teacher
(:mod:`~certvae_jax.certificate.properties`, Corollary 2) and validation at the public boundary
(:mod:`~certvae_jax.certificate.validation`). Nothing here imports the rest of the
package.
"""

from certvae_jax.certificate.bounds import MarginBounds, margin_bounds
from certvae_jax.certificate.core import (
  alignment_loss,
  alignment_loss_from_logits,
  certify,
  constant_student_cost,
  margin,
  report,
  student_mi,
  teacher_mi,
  valid_inputs,
)
from certvae_jax.certificate.properties import coarsen, hierarchy, partition_ids
from certvae_jax.certificate.stats import CertificateStats, batch_stats
from certvae_jax.certificate.validation import check_scalar, validate_simplex
from certvae_jax.certificate.verdict import (
  CERTIFY_SLACK,
  DEFAULT_TAU,
  TAU_SENSITIVITY,
  CertificateReport,
)

__all__ = ["CERTIFY_SLACK", "DEFAULT_TAU", "TAU_SENSITIVITY", "CertificateReport",
           "CertificateStats", "MarginBounds", "alignment_loss", "alignment_loss_from_logits",
           "batch_stats", "certify", "check_scalar", "coarsen", "constant_student_cost",
           "hierarchy", "margin", "margin_bounds", "partition_ids", "report", "student_mi",
           "teacher_mi", "valid_inputs", "validate_simplex"]
