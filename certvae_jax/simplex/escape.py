"""Escape trajectories (paper 2, v4): RST-VAE from a low-margin start, with the teacher's pull.

Mode ``escape`` restores the plain ``vae`` run's final checkpoint exactly (as rescue
restores noalign) and trains RST-VAE from there. At every evaluation it records the
witness margin and the two teacher-induced gradient norms, on the first
``eval.batch_size`` training rows:

* ``grad_norm_mu``: the mean per-row norm of the alignment gradient with respect to the
  encoder mean, ``lambda_TS beta W^T (s(mu) - T)`` (closed form; the gradient of
  ``lambda_TS KL(T || s(mu))`` of one row);
* ``grad_norm_params``: the norm of the gradient of ``lambda_TS L_TS`` (the batch mean)
  with respect to the encoder's parameters (autodiff through the witness path).

The summary's ``escape_trajectory`` lists ``{step, margin, grad_norm_mu,
grad_norm_params}``; the points ride in each checkpoint, so a resumed run continues them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from certvae_jax import certificate, data as data_lib
from certvae_jax.simplex.theory import simplex_vertices
from certvae_jax.training import extensions, modes
from certvae_jax.training.loop import Hook

META_KEY = "escape_trajectory"


def mean_gradient_norm_mu(teacher, witness_probs, beta: float, lambda_ts: float) -> float:
  """``mean_i ||lambda_TS beta W^T (s_i - T_i)||``: each row's alignment gradient with
  respect to its code ``mu_i[:K-1]`` under the fixed simplex witness."""
  t = np.asarray(teacher, np.float64)
  s = np.asarray(witness_probs, np.float64)
  grad = lambda_ts * beta * (s - t) @ simplex_vertices(t.shape[1])
  return float(np.mean(np.linalg.norm(grad, axis=1)))


class EscapeHook(Hook):
  """Records the trajectory at each evaluation (see the module docstring)."""

  def __init__(self, inputs: extensions.PhaseInputs):
    rows = min(len(inputs.x_train), int(inputs.config.eval.batch_size))
    self.x = jnp.asarray(data_lib.to_unit(inputs.x_train[:rows]))
    self.t = jnp.asarray(inputs.t_train[:rows], jnp.float32)
    self.beta = float(inputs.config.model.witness_beta)
    self.lambda_ts = float(inputs.weights["lambda_ts"])
    witness = inputs.witness_logits

    def alignment(params):
      logits = witness(params, self.x, self.t)
      return self.lambda_ts * certificate.alignment_loss_from_logits(self.t, logits,
                                                                     validate=False)
    self._logits = jax.jit(lambda p: witness(p, self.x, self.t))
    self._grad = jax.jit(jax.grad(alignment))
    self.points: list[dict[str, float]] = []

  def on_start(self, loop) -> None:
    if loop.resumed_meta is not None:  # a resumed phase continues its trajectory
      self.points = list(loop.resumed_meta.get(META_KEY, []))
    else:  # the low-margin start itself: the vae run's final state
      loop.evaluate()

  def checkpoint_meta(self, loop, step: int) -> dict[str, Any]:
    return {META_KEY: self.points}

  def on_eval(self, loop, step: int, results) -> None:
    params = loop.state.params
    s = jax.nn.softmax(self._logits(params), axis=-1)
    self.points = [p for p in self.points if p["step"] < step] + [{
        "step": int(step), "margin": float(results["train"]["margin"]),
        "grad_norm_mu": mean_gradient_norm_mu(self.t, s, self.beta, self.lambda_ts),
        "grad_norm_params": float(optax.tree.norm(self._grad(params)))}]


class EscapePlan(extensions.PhasePlan):
  """The escape phase's part: its trajectory hook and the summary's entry."""

  def __init__(self):
    self.hook: EscapeHook | None = None

  def hooks(self, inputs: extensions.PhaseInputs):
    self.hook = EscapeHook(inputs)
    return None, [self.hook]

  def summary(self) -> dict[str, Any]:
    return {META_KEY: self.hook.points if self.hook is not None else []}


def _needs_simplex_head(c) -> None:
  if c.model.head != "simplex":
    raise ValueError("mode: escape trains RST-VAE against the fixed simplex witness; it "
                     "needs --config.model.head=simplex")


ESCAPE = modes.Mode("escape", "teacher_guided",
                    modes.guided_weights(modes.train_alpha, align=True, balance=True),
                    init="continue", source="vae", check=_needs_simplex_head)
EXTENSION = extensions.PhaseExtension(
    lambda config, mode: EscapePlan() if mode.name == "escape" else None)
