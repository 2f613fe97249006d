"""The :class:`Objective` type and the registry of objectives by name."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from certvae_jax import plugins
from certvae_jax.models.vae import TeacherGuidedVAE

Weights = Mapping[str, jnp.ndarray]
LossFn = Callable[[Any, Mapping[str, jnp.ndarray], jax.Array, Weights],
                  tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
EvalFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jax.Array], dict[str, jnp.ndarray]]
WitnessFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


class Objective(NamedTuple):
  """The pure functions a step and an evaluation are built from.

  Attributes:
    loss: ``(params, batch, rng, weights) -> (loss, terms)``. ``batch`` holds ``x``
      (inputs scaled to [0, 1]) and ``t`` (teacher rows, ``(B, K)``); ``weights`` maps
      each of ``weight_names`` to a traced scalar; ``terms`` are the scalars to report.
    weight_names: the loss weights this objective reads. They live in the train state,
      so a schedule or a hook may change them and a restart keeps them.
    evaluate: ``(params, x, t, rng) -> outputs`` per example, with the keys
      ``mu``, ``logvar`` (latent statistics), ``rec`` (``-log p(x|z)``), ``sq_err``
      (mean squared error of the mean reconstruction), ``kl_dim`` (KL per latent
      dimension) and ``witness_logits`` (the raw z-only witness at ``z = mu(x)``, the
      only input of the certificate; paper 1, section 2.3). Optionally ``code``: the
      latent the witness and decoder read, when it is not ``mu`` (the post-hoc head
      reads it); any other per-example outputs are kept for ``summarize``.
    init_params: ``key -> pytree``, parameters the objective owns beside the model's (a
      VQ codebook), kept in ``params['objective']``; ``None`` for none.
    summarize: ``arrays -> {name: float}``, extra split metrics from the per-example
      evaluation outputs (e.g. codebook usage); ``None`` for none.
    gate_updates: ``(updates, weights) -> updates``, applied to the optimizer's updates
      before they reach the parameters (e.g. a weight that freezes the decoder);
      ``None`` for none.
    witness: ``(params, x) -> witness logits``: the raw witness at the code the
      certificate reads, computed without the decoder (``evaluate``'s
      ``witness_logits``, alone). The guard margin and the rescue diagnostics (a
      forward-mode derivative) use it; ``None``: they fall back to ``evaluate``.
    used_head: whether ``loss`` reads its alignment through
      :func:`certvae_jax.objectives.used_head.alignment_logits` (``params`` may then hold
      that module's parameter group), so that a phase may align the shared-safe used head
      instead of the raw one (paper 1, appendix E.9).
    evaluate_latents: ``evaluate`` without the decoder: every output but ``rec`` and
      ``sq_err``. When given, an evaluation runs it on every row (the certificate, the
      latent diagnostics) and reads ``rec`` and ``sq_err`` from ``evaluate`` on the fixed
      subset of ``eval.reconstruction_check_rows`` rows only; ``None``: ``evaluate`` on
      every row.
  """
  loss: LossFn
  weight_names: tuple[str, ...]
  evaluate: EvalFn
  init_params: Callable[[jax.Array], Any] | None = None
  summarize: Callable[[Mapping[str, Any]], dict[str, float]] | None = None
  gate_updates: Callable[[Any, Weights], Any] | None = None
  witness: WitnessFn | None = None
  used_head: bool = False
  evaluate_latents: EvalFn | None = None

  def witness_logits(self, params: Any, x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """The raw witness's logits at the certificate's code: ``witness`` when given, else
    the whole ``evaluate`` (which also decodes; ``t`` feeds a decoder that reads it)."""
    if self.witness is not None:
      return self.witness(params, x)
    return self.evaluate(params, x, t, jax.random.PRNGKey(0))["witness_logits"]


Builder = Callable[[TeacherGuidedVAE, ml_collections.ConfigDict], Objective]
_REGISTRY = plugins.Registry("objective", hint=plugins.REGISTRATIONS_HINT)


def register(name: str) -> Callable[[Builder], Builder]:
  """Decorator: registers ``builder(model, config) -> Objective`` under ``name``."""
  def add(builder: Builder) -> Builder:
    return _REGISTRY.register(name, builder)
  return add


def names() -> tuple[str, ...]:
  """The registered objectives' names."""
  return _REGISTRY.names()


def build(name: str, model: TeacherGuidedVAE, config: ml_collections.ConfigDict) -> Objective:
  """The objective registered as ``name`` (or named by an import path) for ``model``.

  Raises:
    ValueError: an unknown name.
  """
  return _REGISTRY.get(name)(model, config)
