"""Training: one seed's run, its phases, the loop and what plugs into it (paper 1, section 3).

The modes of the papers (:mod:`~certvae_jax.training.modes`); the pure step
(:mod:`~certvae_jax.training.step`) and the compiled functions and batch feeding
(:mod:`~certvae_jax.training.engine`); the loop with its hooks and metric writers
(:mod:`~certvae_jax.training.loop`, :mod:`~certvae_jax.training.hooks`,
:mod:`~certvae_jax.training.writers`); checkpoints and the run directory
(:mod:`~certvae_jax.training.checkpoint`, :mod:`~certvae_jax.training.rundir`); the
teacher stage (:mod:`~certvae_jax.training.teacher_stage`); one phase
(:mod:`~certvae_jax.training.phase_loop`) and the run (:mod:`~certvae_jax.training.runner`).
The entry point is :func:`certvae_jax.train.train` (and ``certvae_jax.train.Runner``),
which registers the built-in plug-ins first (:mod:`certvae_jax.registrations`).
"""

from certvae_jax.training.hooks import Timing
from certvae_jax.training.loop import (
  Event,
  Hook,
  Loop,
  PhaseFailed,
  Restore,
  SetWeights,
  Stop,
  TrainingDiverged,
)
from certvae_jax.training.modes import Mode
from certvae_jax.training.writers import MetricWriter

__all__ = ["Event", "Hook", "Loop", "MetricWriter", "Mode", "PhaseFailed", "Restore",
           "SetWeights", "Stop", "Timing", "TrainingDiverged"]
