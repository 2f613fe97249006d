"""Fit and freeze a GMM teacher for your own model: the public path of
:mod:`certvae_jax.teachers` (``fit_teacher``, ``frozen``, ``FittedTeacher``)."""

from certvae_jax.configs.schema import COVARIANCE_TYPES, pca_dims
from certvae_jax.teachers.frozen import (
  FrozenGMM,
  FrozenPCA,
  FrozenTeacher,
  freeze_sklearn_gmm,
  freeze_sklearn_pca,
  gmm_logits,
  gmm_probs,
  label_smoothed,
  project,
  teacher_logits,
  teacher_probs,
)
from certvae_jax.teachers.gmm import (
  CONFIG_FIELDS,
  FIT_DEFAULTS,
  FittedTeacher,
  feasibility,
  fit_teacher,
  frozen,
  score_teacher,
  search_teacher,
)

__all__ = ["CONFIG_FIELDS", "COVARIANCE_TYPES", "FIT_DEFAULTS", "FittedTeacher", "FrozenGMM",
           "FrozenPCA", "FrozenTeacher", "feasibility", "fit_teacher", "freeze_sklearn_gmm",
           "freeze_sklearn_pca", "frozen", "gmm_logits", "gmm_probs", "label_smoothed",
           "pca_dims", "project", "score_teacher", "search_teacher", "teacher_logits",
           "teacher_probs"]
