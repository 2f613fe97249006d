"""The one config schema: every field of a run config, checked once, section by section.

A run reads a ``ml_collections.ConfigDict`` with the sections ``data``, ``model``,
``warmup``, ``teacher``, ``train``, ``eval`` and ``protocol`` (see
``certvae_jax/configs/digits.py`` for every field and its meaning). :func:`validate`
checks each value a run depends on before any long computation, so that a bad value
fails in a second with a message naming the field, never after an hour of training.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from certvae_jax.certificate.validation import (
  boolean,
  choices_tuple,
  finite,
  is_int,
  is_number,
  non_empty_tuple,
  non_negative,
  non_negative_int,
  one_of,
  open_unit_interval,
  positive,
  positive_int,
  unit_interval,
)

# The values a field may take, where the code that reads the field imports them from here.
# scikit-learn's GaussianMixture covariance types (teacher.covariance_types).
COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")
# The training guard's policies (paper 1, appendices G and H; see certvae_jax.guard).
GUARD_POLICIES = ("off", "raise", "rollback", "barrier")
# Paper 1's baselines, each a mode (baselines.methods).
BASELINES = ("vanilla_vae", "beta_vae", "kl_anneal", "free_bits", "vq_vae", "gmvae")


def teacher_features(features: Any, name: str = "config.teacher.features") -> tuple[str, str]:
  """Where a GMM teacher's features come from, and the search's feature space:
  ``('mu', features)`` for ``'mu'`` / ``'pca:N'`` (the warm-up encoder's means, as they are
  or after a PCA to N axes), ``('input', 'pca:N')`` for ``'input_pca:N'`` (a PCA of the
  training inputs themselves, before any training: paper 2, v4).

  Raises:
    ValueError: any other value, naming ``name``.
  """
  source, space = "mu", features
  if isinstance(features, str) and features.startswith("input_pca:"):
    source, space = "input", features[len("input_"):]
  try:
    pca_dims(space, name)
  except ValueError:
    raise ValueError(f"{name}: expected 'mu', 'pca:N' or 'input_pca:N' with an integer N >= 1, "
                     f"got {features!r}") from None
  return source, space


def pca_dims(features: Any, name: str = "feature_space") -> int | None:
  """``None`` for ``'mu'`` (the GMM on the encoder means), ``N`` for ``'pca:N'``.

  Raises:
    ValueError: any other value, naming ``name``.
  """
  if features == "mu":
    return None
  kind, _, n = str(features).partition(":")
  if kind == "pca" and n.isdigit() and int(n) >= 1:
    return int(n)
  raise ValueError(f"{name}: expected 'mu' or 'pca:N' with an integer N >= 1, got {features!r}")


def _teacher_seed(name: str, value: Any) -> None:
  """A seed whose teacher every seed shares (>= 0), or -1 for each seed's own."""
  if not is_int(value) or value < -1:
    raise ValueError(f"{name}: expected a seed >= 0, or -1 for each seed's own teacher, "
                     f"got {value!r}")


def _widths(name: str, value: Any) -> None:
  """A tuple of layer widths (integers >= 1; empty for no hidden layer)."""
  if value == ():
    return
  non_empty_tuple(lambda w: is_int(w) and w >= 1, "a layer width >= 1")(name, value)


def _prefit_alpha(name: str, value: Any) -> None:
  """``'balance'``, or a number in [0, 1] (given as a string: the field is one)."""
  if value == "balance":
    return
  try:
    alpha = float(value)
  except (TypeError, ValueError):
    alpha = float("nan")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"{name}: expected 'balance' or a number in [0, 1], got {value!r}")


# -- the sections --------------------------------------------------------------------

SECTIONS: dict[str, dict[str, Callable[[str, Any], None]]] = {
    "warmup": {"steps": positive_int, "alpha_kl": non_negative},
    "teacher": {
        "eps": unit_interval,
        "components": non_empty_tuple(lambda k: is_int(k) and k >= 2, "an integer K >= 2"),
        "covariance_types": choices_tuple(COVARIANCE_TYPES),
        "seeds": non_empty_tuple(lambda s: is_int(s) and s >= 0, "an integer seed >= 0"),
        "max_iter": positive_int,
        "reg_covar": non_negative,
        "high_margin": non_negative,
        "min_mass": non_negative,
        "min_mi": non_negative,
        "min_mean_margin": finite,
        "max_hard_balance_kl": non_negative,
        "max_soft_usage_kl": non_negative,
        "features": lambda name, value: teacher_features(value, name),
    },
    "train": {
        "steps": positive_int, "batch_size": positive_int, "learning_rate": positive,
        "alpha_kl": non_negative, "lambda_ts": non_negative, "lambda_bal": non_negative,
        "align_on_mean": boolean, "init": one_of("warmup", "fresh"),
        "used_head": one_of("raw", "shared_safe"), "used_head_trigger": finite,
        "prefit_steps": positive_int, "prefit_alpha": _prefit_alpha,
        "log_every": positive_int,
        "checkpoint_every": positive_int, "progress": boolean, "skip_nonfinite": boolean,
        "steps_per_call": positive_int, "unroll_steps": boolean,
    },
    "eval": {"every": positive_int, "batch_size": positive_int, "tau": non_negative,
             "active_unit_threshold": non_negative, "mi_batch_size": positive_int,
             "delta": open_unit_interval, "bootstrap_resamples": positive_int,
             "reconstruction_check": boolean, "reconstruction_check_rows": non_negative_int,
             "posthoc_max_iter": positive_int, "posthoc_fit_rows": non_negative_int,
             "probe_fit_rows": non_negative_int},
    "model": {
        "decoder_reads_teacher": boolean, "fast_conv": boolean, "latent_dim": positive_int,
        "hidden": _widths, "head_hidden": _widths, "conv_channels": _widths,
        "gaussian_scale": positive, "witness_beta": positive,
    },
    "data": {"on_device": boolean},
    "log": {"tensorboard": boolean},
    "protocol": {"teacher_seed": _teacher_seed},
    "guard": {
        "policy": one_of(*GUARD_POLICIES), "every": positive_int, "gamma": non_negative,
        "gamma_release": non_negative, "factor": positive, "max_lambda": positive,
        "student_first": boolean, "kappa": non_negative, "barrier_floor": positive,
        "max_rollbacks": non_negative_int, "student_first_steps": non_negative_int,
        "fraction": open_unit_interval,
    },
    "baselines": {
        "methods": choices_tuple(BASELINES),
        "beta": non_negative,
        "betas": non_empty_tuple(lambda b: is_number(b) and b >= 0, "a KL weight >= 0"),
        "anneal_start": unit_interval,
        "anneal_steps": non_negative_int,
        "free_bits": non_negative,
        "vq_codes": non_negative_int,
        "vq_commitment": non_negative,
        "gmvae_components": non_negative_int,
    },
}


# The teacher search's fields: certvae_jax.teacher.fit_teacher's keyword for each
# config.teacher field that sets it (the same name, but for two keywords that predate
# the config fields), each checked by SECTIONS["teacher"] under the keyword's name.
TEACHER_SEARCH = {
    "num_components": "components", "covariance_types": "covariance_types", "seeds": "seeds",
    "max_iter": "max_iter", "reg_covar": "reg_covar", "high_margin": "high_margin",
    "min_mass": "min_mass", "min_mi": "min_mi", "min_mean_margin": "min_mean_margin",
    "max_hard_balance_kl": "max_hard_balance_kl", "max_soft_usage_kl": "max_soft_usage_kl",
    "feature_space": "features",
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every value a run depends on, section by section (see :data:`SECTIONS`).

  The model and data sections are checked further where they are used (the model is
  built, the data loaded) before any training; so is ``teacher.kind``, by the registry of
  teacher kinds (:func:`certvae_jax.teachers.kinds.parse`), which a plug-in may extend.

  Raises:
    ValueError: naming the config field and the problem.
  """
  non_negative_int("config.seed", config.seed)
  for section, fields in SECTIONS.items():
    for field, check in fields.items():
      check(f"config.{section}.{field}", config[section][field])
  _check_guard(config.guard)


def _check_guard(guard: ml_collections.ConfigDict) -> None:
  """The guard's fields against each other (each was checked alone above)."""
  if guard.gamma_release < guard.gamma:
    raise ValueError(f"config.guard.gamma_release: must be >= guard.gamma ({guard.gamma}), "
                     f"got {guard.gamma_release}")
  if guard.factor <= 1:
    raise ValueError(f"config.guard.factor: the weight is multiplied by it; expected > 1, "
                     f"got {guard.factor}")
  if guard.policy == "barrier" and guard.kappa <= 0:
    raise ValueError("config.guard.kappa: the barrier policy needs kappa > 0")
