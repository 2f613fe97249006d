"""Run configs: finding a config file, and checking one once, section by section.

A run reads a ``ml_collections.ConfigDict`` with the sections ``data``, ``model``,
``warmup``, ``teacher``, ``train``, ``eval`` and ``protocol`` (see
``certvae_jax/configs/digits.py`` for every field and its meaning). :func:`validate`
checks each value a run depends on before any long computation, so that a bad value
fails in a second with a message naming the field, never after an hour of training.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from certvae_jax import configs, guard
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
from certvae_jax.modes import BASELINES
from certvae_jax.teacher import COVARIANCE_TYPES, pca_dims


def resolve_config_path(spec: str) -> str:
  """``--config`` value -> a config file path (the ``:arg`` suffix kept).

  A bare shipped name (``digits``, ``digits:smoke``, ``cifar100``, ...) resolves to the
  file inside the installed package; anything else is a path, returned unchanged.
  """
  name, sep, arg = spec.partition(":")
  if name in configs.NAMES and not os.path.exists(name):
    return os.path.join(configs.DIRECTORY, name + ".py") + sep + arg
  return spec


def teacher_kind(name: str, value: Any) -> None:
  if value in ("gmm", "label_smoothed"):
    return
  if not (isinstance(value, str) and value.startswith("npz:") and len(value) > 4):
    raise ValueError(f"{name}: expected 'gmm', 'label_smoothed' or 'npz:PATH' (rows 'train' "
                     f"and 'test' of your own teacher), got {value!r}")


# -- the sections --------------------------------------------------------------------

SECTIONS: dict[str, dict[str, Callable[[str, Any], None]]] = {
    "warmup": {"steps": positive_int, "alpha_kl": non_negative},
    "teacher": {
        "kind": teacher_kind,
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
        "features": lambda name, value: pca_dims(value, name),
    },
    "train": {
        "steps": positive_int, "batch_size": positive_int, "learning_rate": positive,
        "alpha_kl": non_negative, "lambda_ts": non_negative, "lambda_bal": non_negative,
        "align_on_mean": boolean, "init": one_of("warmup", "fresh"),
        "prefit_steps": positive_int, "log_every": positive_int,
        "checkpoint_every": positive_int, "progress": boolean, "skip_nonfinite": boolean,
        "steps_per_call": positive_int, "unroll_steps": boolean,
    },
    "eval": {"every": positive_int, "batch_size": positive_int, "tau": non_negative,
             "active_unit_threshold": non_negative, "mi_batch_size": positive_int,
             "delta": open_unit_interval, "bootstrap_resamples": positive_int,
             "reconstruction_check": boolean, "posthoc_max_iter": positive_int},
    "model": {"decoder_reads_teacher": boolean},
    "data": {"on_device": boolean},
    "log": {"tensorboard": boolean},
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


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every value a run depends on, section by section (see :data:`SECTIONS`).

  The model and data sections are checked further where they are used (the model is
  built, the data loaded) before any training.

  Raises:
    ValueError: naming the config field and the problem.
  """
  non_negative_int("config.seed", config.seed)
  for section, fields in SECTIONS.items():
    for field, check in fields.items():
      check(f"config.{section}.{field}", config[section][field])
  guard.check_settings(config.guard)
