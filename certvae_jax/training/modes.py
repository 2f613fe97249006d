"""The mode table: what each training mode is, as data (paper 1, section 3 and table 8).

A mode (:class:`Mode`) names its objective, its weights, where its state starts and which
data stream it draws: ``warmup``, ``full``, ``noalign``, ``rescue`` (the exact restart
from noalign's final checkpoint) and paper 2's plain ``vae`` here; paper 2's
``rst_prefit``, ``rst_alpha_prefit`` and ``escape`` in :mod:`certvae_jax.simplex`; paper
1's baselines in :mod:`certvae_jax.baselines.modes`. ``full``, ``noalign`` and ``rescue``
share one data and RNG stream, so they differ only in their weights and initialisation. A
new mode is a :class:`Mode` passed to :func:`register`; the run reads nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import ml_collections

from certvae_jax import plugins
from certvae_jax.configs.schema import BASELINES
from certvae_jax.rng_streams import VARIANT_CODE, WARMUP_CODE
from certvae_jax.training.step import WeightSchedule

Config = ml_collections.ConfigDict


INITS = ("fresh", "variant", "continue", "params")


class Mode(NamedTuple):
  """One row of the mode table.

  Attributes:
    name: the ``--mode`` value and the phase directory's stem.
    objective: the registered objective (:mod:`certvae_jax.objectives`) it minimises.
    weights: ``config -> {name: value}``, the objective's base loss weights.
    init: where the state starts: ``'fresh'`` (new parameters), ``'variant'`` (new
      parameters, or the warm-up's where ``config.train.init = 'warmup'``),
      ``'continue'`` (the final state of mode ``source``, exactly: optimizer, step,
      RNG and data position included) or ``'params'`` (the parameters of ``source``'s
      final state, with a fresh optimizer).
    source: the mode ``'continue'`` / ``'params'`` read.
    run_source: run ``source`` first when it is missing (else it must exist).
    steps: ``config -> int``, the steps this mode trains (``'continue'`` adds them to
      the source's final step).
    data_code: which data/RNG stream the mode draws (:mod:`certvae_jax.rng_streams`).
    needs_teacher: whether it trains against the teacher (warm-up does not).
    schedule: ``config -> schedule or None``: weights as a function of the step.
    tag: ``config -> str``, a variant tag for the directory, so that two settings of
      one seed never share a phase directory ("" for none).
    check: ``config -> None``, raises ``ValueError`` when the config cannot run it.
    check_targets: ``train rows -> None``, raises ``ValueError`` when the teacher's rows
      on the training split cannot train it (checked before the phase's loop is built).
    meta: ``config -> dict``, extra metadata a checkpoint of this mode must match.
    target_weights: ``(config, train rows) -> {name: value}``, weights that depend on
      the teacher's rows on the training split, merged over ``weights`` (and so saved in
      the checkpoint's metadata and the summary); ``None`` for none. Each name must also
      be in ``weights`` (with a placeholder value), which names the state's weights.
  """
  name: str
  objective: str
  weights: Callable[[Config], dict[str, float]]
  init: str = "variant"
  source: str | None = None
  run_source: bool = False
  steps: Callable[[Config], int] = lambda c: int(c.train.steps)
  data_code: int = VARIANT_CODE
  needs_teacher: bool = True
  schedule: Callable[[Config], WeightSchedule | None] = lambda c: None
  tag: Callable[[Config], str] = lambda c: ""
  check: Callable[[Config], None] = lambda c: None
  check_targets: Callable[[Any], None] = lambda t: None
  meta: Callable[[Config], dict[str, Any]] = lambda c: {}
  target_weights: Callable[[Config, Any], dict[str, float]] | None = None


_MODES = plugins.Registry("mode", hint=plugins.REGISTRATIONS_HINT)
TARGETS = ("live", "fixed")


def register(mode: Mode) -> Mode:
  """Adds (or replaces) a row of the mode table.

  Raises:
    ValueError: a malformed row.
  """
  if mode.init not in INITS:
    raise ValueError(f"Mode.init: expected one of {INITS}, got {mode.init!r}")
  if mode.init in ("continue", "params") and not mode.source:
    raise ValueError(f"Mode.source: mode {mode.name!r} starts from another mode's final "
                     "state; name that mode")
  return _MODES.register(mode.name, mode)


def get(name: str) -> Mode:
  """The row of mode ``name``, or of a :class:`Mode` named by an import path
  ``package.module:NAME`` (registered under its own name on first use).

  Raises:
    ValueError: an unknown mode, or a path to something else.
  """
  mode = _MODES.get(name)
  if not isinstance(mode, Mode):
    raise ValueError(f"mode: {name} is not a certvae_jax.training.modes.Mode")
  if name not in _MODES.names():
    register(mode)
  return mode


def names() -> tuple[str, ...]:
  """The registered modes (internal stages such as ``prefit`` included)."""
  return _MODES.names()


def check_target(target: str) -> None:
  """Raises ``ValueError`` unless ``target`` is one of :data:`TARGETS`."""
  if target not in TARGETS:
    raise ValueError(f"target: unknown {target!r}; expected one of {TARGETS}")


def phase_dir(mode: str, target: str = "live", tag: str = "") -> str:
  """The directory rule: ``<mode>[_<tag>][_fixed]``; warm-up has one. A run's phase is
  named by :func:`certvae_jax.training.phase_loop.phase_name`, which computes the tag."""
  check_target(target)
  if mode == "warmup":
    return "warmup"
  return mode + (f"_{tag}" if tag else "") + ("_fixed" if target == "fixed" else "")


def guided_weights(alpha_kl: Callable[[Config], float], *, align: bool, balance: bool
                   ) -> Callable[[Config], dict[str, float]]:
  """The teacher-guided objective's weights: ``alpha_KL`` from ``alpha_kl(config)``,
  ``lambda_TS`` and ``lambda_bal`` from ``config.train`` where ``align`` / ``balance``,
  else 0."""
  def weights(c: Config) -> dict[str, float]:
    return {"alpha_kl": float(alpha_kl(c)),
            "lambda_ts": float(c.train.lambda_ts) if align else 0.0,
            "lambda_bal": float(c.train.lambda_bal) if balance else 0.0}
  return weights


def train_alpha(c: Config) -> float:
  """``config.train.alpha_kl``: the KL weight of every variant."""
  return c.train.alpha_kl
register(Mode("warmup", "teacher_guided",
              guided_weights(lambda c: c.warmup.alpha_kl, align=False, balance=False), init="fresh",
              steps=lambda c: int(c.warmup.steps), data_code=WARMUP_CODE,
              needs_teacher=False))
register(Mode("full", "teacher_guided", guided_weights(train_alpha, align=True, balance=True)))
register(Mode("noalign", "teacher_guided", guided_weights(train_alpha, align=False, balance=True)))
register(Mode("rescue", "teacher_guided", guided_weights(train_alpha, align=True, balance=True),
              init="continue", source="noalign"))
register(Mode("vae", "teacher_guided", guided_weights(train_alpha, align=False, balance=False)))
# Paper 2's prefit and rst_prefit register in certvae_jax.simplex.training, paper 1's
# baselines in certvae_jax.baselines.modes.

# What ``--mode`` offers (``prefit`` runs as rst_prefit's first stage).
CLI_MODES = ("warmup", "full", "noalign", "rescue", "vae", "rst_prefit",
             "rst_alpha_prefit", "escape") + BASELINES
