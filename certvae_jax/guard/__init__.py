"""Guarded training: keep the certificate while training (paper 1, appendices G and H).

Appendix H shows that, under gradient flow, a large enough alignment weight
``lambda_TS`` near the boundary ``G_tau = 0`` makes the certified region forward
invariant, and that re-enabling alignment can rescue a collapsed run while the encoder
and head still respond to the teacher. A guard turns this into a training procedure, plugged into every run as a phase
extension (:mod:`~certvae_jax.guard.extension`):

* **Guard set**: a fixed slice of the training split (``guard.fraction``), held out of
  the training batches, on which the raw witness's margin ``G_tau`` is computed from the
  mergeable certificate sums every ``guard.every`` steps and at every checkpoint (a
  forward pass of the encoder and head: XLA drops the decoder, whose outputs are unused).
* **Policy** (``guard.policy``):

  - ``raise``: when ``G_tau < gamma``, ``lambda_TS`` is multiplied by ``factor`` (capped
    at ``max_lambda``); when ``G_tau > gamma_release`` it decays back towards its base
    value by the same factor. With ``guard.student_first``, the steps taken while the
    weight is raised are student-first steps (:mod:`certvae_jax.guard.objective`).
  - ``rollback``: as ``raise``, and when ``G_tau < 0`` the run restores the last
    checkpoint at which the guard margin was positive (kept past checkpoint retention),
    discards the checkpoints after it, and continues from it with the raised weight; at
    most ``max_rollbacks`` times.
  - ``barrier``: appendix G's ``-kappa log G_batch`` in the loss
    (:func:`certvae_jax.guard.objective.barrier`); the guard set is still measured.
  - ``off``: no guard; runs and numbers are those of an unguarded run.

Every intervention is an event row of ``metrics.jsonl`` (``"event": "guard"``), and the
guard's counters and last certified checkpoint are saved with each checkpoint, so a
guarded run killed and resumed continues exactly.
"""

from certvae_jax.guard.extension import EXTENSION, GuardPlan, plan
from certvae_jax.guard.hook import (
  GuardHook,
  StudentFirstEnd,
  margin_fn,
  raise_step,
  raised,
  split_rows,
)
from certvae_jax.guard.objective import STUDENT_FIRST, barrier, batch_margin, guarded

__all__ = ["EXTENSION", "STUDENT_FIRST", "GuardHook", "GuardPlan", "StudentFirstEnd", "barrier",
           "batch_margin", "guarded", "margin_fn", "plan", "raise_step", "raised", "split_rows"]
