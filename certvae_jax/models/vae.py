"""The teacher-guided VAE: an encoder, a decoder and a raw z-only witness head."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from certvae_jax.models import registry
from certvae_jax.models.conv import ConvDecoder, ConvEncoder
from certvae_jax.models.heads import LinearHead, MLPHead
from certvae_jax.models.mlp import MLPDecoder, MLPEncoder


class TeacherGuidedVAE(nn.Module):
  """Composes any encoder, decoder and head; parameters live under those three names.

  Attributes:
    encoder: module ``x -> (mu, logvar)``.
    decoder: module ``(z, t) -> likelihood parameters``; ``t`` is ignored unless the
      decoder reads the teacher.
    head: module ``z -> witness logits`` (sees only ``z``).
  """
  encoder: nn.Module
  decoder: nn.Module
  head: nn.Module

  def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    return self.encoder(x)

  def decode(self, z: jnp.ndarray, t: jnp.ndarray | None = None) -> jnp.ndarray:
    if getattr(self.decoder, "reads_teacher", False):
      return self.decoder(z, t)
    return self.decoder(z)

  def witness_logits(self, z: jnp.ndarray) -> jnp.ndarray:
    return self.head(z)

  def __call__(self, x: jnp.ndarray, t: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """Runs every part once (used to initialise parameters)."""
    mu, logvar = self.encode(x)
    return self.decode(mu, t), self.witness_logits(mu), logvar


def build_model(model_config: Any, input_dim: int, num_classes: int,
                example_shape: tuple[int, ...] | None = None) -> TeacherGuidedVAE:
  """Builds the VAE described by ``config.model``.

  Args:
    model_config: ``ConfigDict`` with ``encoder``, ``decoder`` (``""``: the encoder's
      kind) and ``head`` (registered names or import paths, see
      :mod:`certvae_jax.models.registry`), ``hidden``, ``conv_channels``, ``fast_conv``,
      ``latent_dim``, ``head_hidden``, ``witness_beta``, ``decoder_reads_teacher``.
    input_dim: flattened input size.
    num_classes: K, the teacher's number of classes.
    example_shape: the shape of one example, ``(H, W, C)`` for the conv encoder.

  Raises:
    ValueError: an unknown architecture or head, or a non-positive size.
  """
  hidden = tuple(int(h) for h in model_config.hidden)
  latent = int(model_config.latent_dim)
  if latent < 1 or any(h < 1 for h in hidden):
    raise ValueError(f"model: latent_dim and hidden widths must be >= 1, got {latent}, {hidden}")
  if num_classes < 2:
    raise ValueError(f"teacher.num_components: needs K >= 2, got {num_classes}")
  dims = registry.Dims(int(input_dim), tuple(example_shape) if example_shape else None, latent,
                       int(num_classes))
  encoder = registry.build("encoder", model_config.encoder, model_config, dims)
  decoder = model_config.get("decoder", "")
  if not decoder:  # the decoder of the encoder's kind
    decoder = model_config.encoder
    if decoder not in registry.names("decoder"):
      raise ValueError(f"model.decoder: the encoder {model_config.encoder!r} has no decoder of "
                       "the same name; set config.model.decoder")
  return TeacherGuidedVAE(encoder=encoder,
                          decoder=registry.build("decoder", decoder, model_config, dims),
                          head=registry.build("head", model_config.head, model_config, dims))


def _conv_shape(model_config: Any, dims: registry.Dims) -> tuple[tuple[int, ...], tuple[int, ...]]:
  channels = tuple(int(c) for c in model_config.conv_channels)
  shape = tuple(dims.example_shape or ())
  if len(shape) != 3:
    raise ValueError(f"model.encoder: 'conv' needs image examples of shape (H, W, C), got "
                     f"{shape or 'flat vectors'}")
  if not channels or any(c < 1 for c in channels):
    raise ValueError(f"model.conv_channels: expected positive widths, got {channels}")
  if shape[0] % 2 ** len(channels) or shape[1] % 2 ** len(channels):
    raise ValueError(f"model.conv_channels: {len(channels)} stride-2 stages need H and W "
                     f"divisible by {2 ** len(channels)}, got {shape[:2]}")
  return shape, channels


def _hidden(model_config: Any) -> tuple[int, ...]:
  return tuple(int(h) for h in model_config.hidden)


registry.register("encoder", "mlp", lambda c, d: MLPEncoder(hidden=_hidden(c),
                                                            latent_dim=d.latent_dim))
registry.register("decoder", "mlp", lambda c, d: MLPDecoder(
    hidden=_hidden(c)[::-1], out_dim=d.input_dim, reads_teacher=bool(c.decoder_reads_teacher)))
registry.register("encoder", "conv", lambda c, d: ConvEncoder(
    image_shape=_conv_shape(c, d)[0], channels=_conv_shape(c, d)[1], latent_dim=d.latent_dim,
    fast=bool(c.fast_conv)))
registry.register("decoder", "conv", lambda c, d: ConvDecoder(
    image_shape=_conv_shape(c, d)[0], channels=_conv_shape(c, d)[1],
    reads_teacher=bool(c.decoder_reads_teacher), fast=bool(c.fast_conv)))
registry.register("head", "linear", lambda c, d: LinearHead(d.num_classes))
registry.register("head", "mlp", lambda c, d: MLPHead(
    d.num_classes, tuple(int(h) for h in c.head_hidden)))
# Paper 2's fixed simplex head registers in certvae_jax.simplex.training.


def init_params(model: TeacherGuidedVAE, rng: jax.Array, input_dim: int,
                num_classes: int) -> Any:
  """Parameters for a batch of one, under ``encoder`` / ``decoder`` / ``head``."""
  x = jnp.zeros((1, input_dim), jnp.float32)
  t = jnp.full((1, num_classes), 1.0 / num_classes, jnp.float32)
  return model.init(rng, x, t)["params"]
