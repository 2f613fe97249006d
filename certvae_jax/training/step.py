"""The pure train step and evaluation step, built from an objective. No config, no files.

``train_step(state, batch) -> (state, metrics)`` is jitted with the state donated. The
loss weights live in the state (as optax's ``inject_hyperparams`` keeps
hyperparameters in its state): every mode that shares an objective shares one
compiled step, a weight changed by a hook is checkpointed with the parameters, and a
restart continues with it exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from certvae_jax import certificate, data as data_lib
from certvae_jax.objectives import Objective

# The per-example evaluation outputs that need the decoder.
DECODER_OUTPUTS = ("rec", "sq_err")
# ``(weights, step) -> weights``: traced inside the step, e.g. a KL-annealing ramp.
WeightSchedule = Callable[[Mapping[str, jnp.ndarray], jnp.ndarray], dict[str, jnp.ndarray]]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes.

  Attributes:
    step: steps taken; the data position (batches are a pure function of it).
    params: model parameters.
    opt_state: optimizer state.
    rng: a raw ``uint32[2]`` key; step ``t`` uses ``fold_in(rng, t)``.
    skipped: batches skipped for a non-finite loss or gradient.
    weights: the objective's loss weights (name -> float32 scalar).
  """
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray
  weights: dict[str, jnp.ndarray]


def as_weights(weights: Mapping[str, float]) -> dict[str, jnp.ndarray]:
  """Loss weights as float32 scalars, the form the state holds."""
  return {name: jnp.asarray(value, jnp.float32) for name, value in weights.items()}


def init_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array,
               weights: Mapping[str, float]) -> TrainState:
  """A state at step 0 with a fresh optimizer state."""
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params),
                    rng=rng, skipped=jnp.asarray(0, jnp.int32), weights=as_weights(weights))


def make_train_step(objective: Objective, tx: optax.GradientTransformation,
                    skip_nonfinite: bool = False, schedule: WeightSchedule | None = None
                    ) -> Callable[..., tuple[TrainState, dict]]:
  """Builds ``train_step(state, batch) -> (state, metrics)``, jitted with the state donated.

  Args:
    objective: the loss and its weights' names.
    tx: the optimizer.
    skip_nonfinite: a batch whose loss, gradient or new parameters are not finite
      leaves parameters and optimizer unchanged (the step and data position advance,
      ``state.skipped`` counts it); otherwise its metrics are non-finite and the loop
      stops on them.
    schedule: weights as a function of the step, applied to ``state.weights`` inside
      the step (the state keeps the base weights).

  The step's randomness is ``fold_in(state.rng, state.step)``: it does not depend on
  history or on the number of devices. ``metrics`` holds the objective's terms,
  ``loss``, ``grad_norm``, ``param_norm``, ``skipped`` and the weights used
  (``weight/<name>``).
  """

  def train_step(state: TrainState, batch: Mapping[str, jnp.ndarray]):
    rng = jax.random.fold_in(state.rng, state.step)
    weights = state.weights if schedule is None else schedule(state.weights, state.step)
    (loss, terms), grads = jax.value_and_grad(objective.loss, has_aux=True)(
        state.params, batch, rng, weights)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if objective.gate_updates is not None:
      updates = objective.gate_updates(updates, weights)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    skipped = state.skipped
    if skip_nonfinite:
      ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.tree.norm(params)))
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
      skipped = skipped + (~ok).astype(skipped.dtype)
      # Reported finite so that the loop does not stop; the skip is in the counter.
      loss, grad_norm = jnp.where(ok, loss, 0.0), jnp.where(ok, grad_norm, 0.0)
      terms = {k: jnp.where(ok, v, 0.0) for k, v in terms.items()}
    metrics = dict(terms, loss=loss, grad_norm=grad_norm,
                   param_norm=optax.tree.norm(params), skipped=skipped,
                   **{f"weight/{k}": v for k, v in weights.items()})
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         skipped=skipped), metrics

  return jax.jit(train_step, donate_argnums=0)


class EvalStep:
  """An objective's compiled evaluation (see :func:`make_eval_step`).

  Called as ``eval_step(params, x, t, mask, rng) -> (outputs, stats)``: every output of
  the objective's ``evaluate``. When the objective also evaluates without the decoder,
  ``latents`` is the same call without the decoder's outputs, and ``reconstruct(params, x,
  t, rng) -> {"rec": ..., "sq_err": ...}`` gives them for a subset of rows; both ``None``
  otherwise. Each is compiled when first called.
  """

  def __init__(self, full: Callable[..., Any], latents: Callable[..., Any] | None = None,
               reconstruct: Callable[..., Any] | None = None):
    self.full, self.latents, self.reconstruct = full, latents, reconstruct

  def __call__(self, params, x, t, mask, rng):
    return self.full(params, x, t, mask, rng)


def make_eval_step(objective: Objective, out_sharding: jax.sharding.Sharding | None = None
                   ) -> EvalStep:
  """Builds the jitted evaluation of ``objective`` (:class:`EvalStep`).

  ``eval_step(params, x, t, mask, rng) -> (outputs, stats)``. ``x`` may be uint8 pixels
  (scaled on the device). ``outputs`` are the objective's per-example evaluation outputs
  with the witness as probabilities (``witness``); ``stats`` are the certificate's
  mergeable sums over the rows where ``mask`` is true, read at the encoder mean ``z =
  mu(x)`` (paper 1, section 2.3). ``out_sharding`` (replicated) gathers the per-example
  outputs to every process.
  """

  def step(evaluate):
    def eval_step(params, x, t, mask, rng):
      out = dict(evaluate(params, data_lib.to_unit(x), t, rng))
      logits = out.pop("witness_logits")
      out["witness"] = jax.nn.softmax(logits, axis=-1)
      return out, certificate.batch_stats(t, logits, from_logits=True, mask=mask)
    return jax.jit(eval_step, out_shardings=out_sharding)

  def reconstruct(params, x, t, rng):
    out = objective.evaluate(params, data_lib.to_unit(x), t, rng)
    return {key: out[key] for key in DECODER_OUTPUTS}

  if objective.evaluate_latents is None:
    return EvalStep(step(objective.evaluate))
  return EvalStep(step(objective.evaluate), step(objective.evaluate_latents),
                  jax.jit(reconstruct, out_shardings=out_sharding))
