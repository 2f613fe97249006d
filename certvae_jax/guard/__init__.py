"""Guarded training: keep the certificate while training (paper 1, appendices G and H).

A fixed guard set is held out of the training split and its raw-witness margin ``G_tau``
measured every ``guard.every`` steps and at every checkpoint; the policy (``raise``,
``rollback``, ``barrier`` or ``off``) then raises ``lambda_TS``, rolls back to the last
certified checkpoint, or adds appendix G's barrier to the loss; student-first steps train
the encoder and witness alone. The guard plugs into every run as a phase extension
(:mod:`~certvae_jax.guard.extension`); its hooks are :mod:`~certvae_jax.guard.hook`, its
objective transform :mod:`~certvae_jax.guard.objective`. The policies and their settings
are documented in docs/training.md ("Guarded training").

Beside it, :mod:`~certvae_jax.guard.used_head` is the other protection paper 1 allows
(section 3, appendix E.9): the shared-safe used head, another phase extension.
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
from certvae_jax.guard.used_head import UsedHeadHook, UsedHeadPlan

__all__ = ["EXTENSION", "STUDENT_FIRST", "GuardHook", "GuardPlan", "StudentFirstEnd", "barrier",
           "UsedHeadHook", "UsedHeadPlan", "batch_margin", "guarded", "margin_fn", "plan",
           "raise_step", "raised", "split_rows"]
