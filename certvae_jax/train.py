"""The Python entry point of a run: :func:`train` one mode in a workdir (paper 1, section 3).

Warm-up -> teacher -> the mode's phase, each resumed or reused when the workdir has it;
the pieces live in :mod:`certvae_jax.training`. Each of ``full`` / ``noalign`` /
``rescue`` trains against the live frozen teacher ``T(x)`` (``target='live'``) or its
cached rows ``T_fix`` (``target='fixed'``, the paper's Tiny-ImageNet-200 protocol).
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections

from certvae_jax import certificate, registrations  # noqa: F401  (the built-in plug-ins)
from certvae_jax.training.context import make_context
from certvae_jax.training.loop import Hook, PhaseFailed, TrainingDiverged
from certvae_jax.training.runner import Runner
from certvae_jax.training.writers import MetricWriter

__all__ = ["Runner", "PhaseFailed", "TrainingDiverged", "train", "summary_line", "make_context"]


def train(config: ml_collections.ConfigDict, mode: str, workdir: str, target: str = "live",
          overwrite: bool = False, hooks: Sequence[Hook] = (),
          writers: Sequence[MetricWriter] = ()) -> dict[str, Any]:
  """Runs one mode in ``workdir`` and returns its summary (the Python entry point).

  Runs warm-up and teacher search when the workdir lacks them and reuses them
  otherwise; resumes from the latest checkpoint; returns immediately with the
  summary of a finished run. Progress goes to the ``certvae_jax`` logger (process 0).

  Args:
    config: the run config (see ``certvae_jax/configs/digits.py``).
    mode: a registered mode (:func:`certvae_jax.training.modes.names`).
    workdir: the seed's run directory.
    target: ``'live'`` or ``'fixed'`` teacher targets.
    overwrite: clear a workdir made by an incompatible run instead of refusing it.
    hooks: extra loop hooks (:mod:`certvae_jax.training.hooks`).
    writers: extra metric writers (:mod:`certvae_jax.training.writers`).

  Raises:
    ValueError: bad config or data, a workdir made by an incompatible run (without
      ``overwrite``), or a workdir locked by another run.
    TrainingDiverged: a non-finite loss (the last good checkpoint is kept).
    PhaseFailed: an unexpected error inside a phase (a bug, its ``__cause__``); the
      message names the last good checkpoint a rerun resumes from.
  """
  return Runner(config, workdir, overwrite=overwrite, hooks=hooks,
                writers=writers).run_mode(mode, target)


def summary_line(split_metrics: dict[str, Any]) -> str:
  """The one-line certificate of a summary split, e.g. ``certified: G_tau=+0.62 (...)``,
  with the population verdict where the split carries bounds (the test split)."""
  fields = [f for f in certificate.CertificateReport._fields if f != "bounds"]
  bounds = split_metrics.get("bounds")
  return certificate.CertificateReport(
      **{f: split_metrics[f] for f in fields},
      bounds=None if bounds is None else certificate.MarginBounds(**bounds)).summary_line()

