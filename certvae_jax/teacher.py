"""Fit and freeze a GMM teacher for your own model: the public path of
:mod:`certvae_jax.teachers` (``fit_teacher``, ``frozen``, ``FittedTeacher``, ...)."""

from certvae_jax import teachers as _teachers
from certvae_jax.configs.schema import COVARIANCE_TYPES, pca_dims
from certvae_jax.teachers import *  # noqa: F403  (this path re-exports the package face)
from certvae_jax.teachers.gmm import CONFIG_FIELDS, FIT_DEFAULTS

__all__ = [*_teachers.__all__, "CONFIG_FIELDS", "COVARIANCE_TYPES", "FIT_DEFAULTS", "pca_dims"]
