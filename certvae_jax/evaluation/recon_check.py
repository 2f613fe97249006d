"""A reconstruction-side check for decoder bypass (paper 1, appendix I and conclusion).

With ``x_hat = dec(mu(x))`` the decoded mean and ``T`` the frozen teacher (a function of
any input): ``recon_alignment = mean KL(T(x) || T(x_hat))``, ``recon_margin = I_T - tau -
recon_alignment`` and ``witness_recon_kl = mean KL(s(mu(x)) || T(x_hat))``. Diagnostics,
never a certificate (``T(x_hat)`` can be off-distribution); skipped for a teacher given by
rows. How to read them: the Training page, "The reconstruction side".
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from certvae_jax import data as data_lib
from certvae_jax.models.vae import TeacherGuidedVAE
from certvae_jax.teachers.frozen import FrozenTeacher, teacher_logits


def _kl_from_logs(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """``KL(p || q)`` per row from log-probabilities (finite where ``log q`` is)."""
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def per_example(model: TeacherGuidedVAE, encoder_apply: Callable[..., Any]):
  """``(params, teacher, x) -> {recon_teacher_kl, witness_recon_kl}``, per row (pure)."""

  def fn(params, teacher: FrozenTeacher, x):
    x = data_lib.to_unit(x)
    v = {"params": params}
    log_t = jax.nn.log_softmax(teacher_logits(encoder_apply, teacher, x), axis=-1)
    mu, _ = model.apply(v, x, method=TeacherGuidedVAE.encode)
    x_hat = jax.nn.sigmoid(model.apply(v, mu, jnp.exp(log_t), method=TeacherGuidedVAE.decode))
    log_t_hat = jax.nn.log_softmax(teacher_logits(encoder_apply, teacher, x_hat), axis=-1)
    log_s = jax.nn.log_softmax(model.apply(v, mu, method=TeacherGuidedVAE.witness_logits), -1)
    return {"recon_teacher_kl": _kl_from_logs(log_t, log_t_hat),
            "witness_recon_kl": _kl_from_logs(log_s, log_t_hat)}

  return fn


class ReconstructionCheck:
  """An evaluation probe (see :func:`certvae_jax.evaluation.splits.evaluate_split`).

  Args:
    fn: jitted ``(params, teacher, x) -> per-example arrays`` from :func:`per_example`.
    teacher: the frozen teacher, placed on the devices.
  """

  def __init__(self, fn: Callable[..., dict[str, jax.Array]], teacher: FrozenTeacher):
    self.fn, self.teacher = fn, teacher

  def batch(self, params: Any, x: Any) -> dict[str, jax.Array]:
    return self.fn(params, self.teacher, x)

  @staticmethod
  def metrics(arrays: dict[str, np.ndarray], teacher_mi: float, tau: float) -> dict[str, float]:
    """The split's diagnostics from the per-example arrays (float64 means)."""
    l_rec = float(np.mean(arrays["recon_teacher_kl"], dtype=np.float64))
    return {"recon_alignment": l_rec, "recon_margin": teacher_mi - tau - l_rec,
            "witness_recon_kl": float(np.mean(arrays["witness_recon_kl"], dtype=np.float64))}
