"""Run configs: finding a config file, and checking one once, section by section.

A run reads a ``ml_collections.ConfigDict`` with the sections ``data``, ``model``,
``warmup``, ``teacher``, ``train``, ``eval`` and ``protocol`` (see
``certvae_jax/configs/digits.py`` for every field and its meaning). :func:`validate`
checks each value a run depends on before any long computation, so that a bad value
fails in a second with a message naming the field, never after an hour of training.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import ml_collections
import numpy as np

from certvae_jax import configs
from certvae_jax.teacher import COVARIANCE_TYPES


def resolve_config_path(spec: str) -> str:
  """``--config`` value -> a config file path (the ``:arg`` suffix kept).

  A bare shipped name (``digits``, ``digits:smoke``, ``cifar100``, ...) resolves to the
  file inside the installed package; anything else is a path, returned unchanged.
  """
  name, sep, arg = spec.partition(":")
  if name in configs.NAMES and not os.path.exists(name):
    return os.path.join(configs.DIRECTORY, name + ".py") + sep + arg
  return spec


# -- field checks: each raises ValueError naming ``config.<name>`` -------------------


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
  if not _is_int(value) or value < 1:
    raise ValueError(f"config.{name}: expected an integer >= 1, got {value!r}")


def non_negative_int(name: str, value: Any) -> None:
  if not _is_int(value) or value < 0:
    raise ValueError(f"config.{name}: expected an integer >= 0, got {value!r}")


def non_negative(name: str, value: Any) -> None:
  if not _is_number(value) or not math.isfinite(value) or value < 0:
    raise ValueError(f"config.{name}: expected a finite number >= 0, got {value!r}")


def positive(name: str, value: Any) -> None:
  if not _is_number(value) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"config.{name}: expected a finite number > 0, got {value!r}")


def finite(name: str, value: Any) -> None:
  if not _is_number(value) or not math.isfinite(value):
    raise ValueError(f"config.{name}: expected a finite number, got {value!r}")


def boolean(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"config.{name}: expected True or False, got {value!r}")


def unit_interval(name: str, value: Any) -> None:
  if not _is_number(value) or not 0.0 <= value <= 1.0:
    raise ValueError(f"config.{name}: expected a number in [0, 1], got {value!r}")


def one_of(*choices: str) -> Callable[[str, Any], None]:
  def check(name: str, value: Any) -> None:
    if value not in choices:
      raise ValueError(f"config.{name}: expected one of {choices}, got {value!r}")
  return check


def non_empty_tuple(element: Callable[[Any], bool], what: str) -> Callable[[str, Any], None]:
  def check(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or not value:
      raise ValueError(f"config.{name}: expected a non-empty tuple, got {value!r}")
    for item in value:
      if not element(item):
        raise ValueError(f"config.{name}: each entry must be {what}, got {item!r}")
  return check


# -- the sections --------------------------------------------------------------------

SECTIONS: dict[str, dict[str, Callable[[str, Any], None]]] = {
    "warmup": {"steps": positive_int, "alpha_kl": non_negative},
    "teacher": {
        "kind": one_of("gmm", "label_smoothed"),
        "eps": unit_interval,
        "components": non_empty_tuple(lambda k: _is_int(k) and k >= 2, "an integer K >= 2"),
        "covariance_types": non_empty_tuple(lambda c: c in COVARIANCE_TYPES,
                                            f"one of {COVARIANCE_TYPES}"),
        "seeds": non_empty_tuple(lambda s: _is_int(s) and s >= 0, "an integer seed >= 0"),
        "max_iter": positive_int,
        "reg_covar": non_negative,
        "high_margin": non_negative,
        "min_mass": non_negative,
        "min_mi": non_negative,
        "min_mean_margin": finite,
        "max_hard_balance_kl": non_negative,
        "max_soft_usage_kl": non_negative,
    },
    "train": {
        "steps": positive_int, "batch_size": positive_int, "learning_rate": positive,
        "alpha_kl": non_negative, "lambda_ts": non_negative, "lambda_bal": non_negative,
        "align_on_mean": boolean, "init": one_of("warmup", "fresh"),
        "prefit_steps": positive_int, "log_every": positive_int,
        "checkpoint_every": positive_int, "progress": boolean, "skip_nonfinite": boolean,
    },
    "eval": {"every": positive_int, "batch_size": positive_int, "tau": non_negative,
             "active_unit_threshold": non_negative, "mi_batch_size": positive_int},
    "model": {"decoder_reads_teacher": boolean},
    "data": {"on_device": boolean},
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every value a run depends on, section by section (see :data:`SECTIONS`).

  The model and data sections are checked further where they are used (the model is
  built, the data loaded) before any training.

  Raises:
    ValueError: naming the config field and the problem.
  """
  non_negative_int("seed", config.seed)
  for section, fields in SECTIONS.items():
    for field, check in fields.items():
      check(f"{section}.{field}", config[section][field])
