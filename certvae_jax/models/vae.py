"""The teacher-guided VAE: an encoder, a decoder and a raw z-only witness head."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from certvae_jax.models.conv import ConvDecoder, ConvEncoder
from certvae_jax.models.heads import LinearHead, MLPHead
from certvae_jax.models.mlp import MLPDecoder, MLPEncoder
from certvae_jax.simplex import SimplexWitness


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
    model_config: ``ConfigDict`` with ``encoder`` ('mlp' | 'conv'), ``hidden``,
      ``conv_channels``, ``fast_conv``, ``latent_dim``, ``head`` ('linear' | 'mlp' |
      'simplex'), ``head_hidden``, ``witness_beta``, ``decoder_reads_teacher``.
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
  reads_teacher = bool(model_config.decoder_reads_teacher)
  if model_config.encoder == "mlp":
    encoder = MLPEncoder(hidden=hidden, latent_dim=latent)
    decoder = MLPDecoder(hidden=hidden[::-1], out_dim=input_dim, reads_teacher=reads_teacher)
  elif model_config.encoder == "conv":
    channels = tuple(int(c) for c in model_config.conv_channels)
    shape = tuple(example_shape or ())
    if len(shape) != 3:
      raise ValueError(f"model.encoder: 'conv' needs image examples of shape (H, W, C), got "
                       f"{shape or 'flat vectors'}")
    if not channels or any(c < 1 for c in channels):
      raise ValueError(f"model.conv_channels: expected positive widths, got {channels}")
    if shape[0] % 2 ** len(channels) or shape[1] % 2 ** len(channels):
      raise ValueError(f"model.conv_channels: {len(channels)} stride-2 stages need H and W "
                       f"divisible by {2 ** len(channels)}, got {shape[:2]}")
    fast = bool(model_config.fast_conv)
    encoder = ConvEncoder(image_shape=shape, channels=channels, latent_dim=latent, fast=fast)
    decoder = ConvDecoder(image_shape=shape, channels=channels, reads_teacher=reads_teacher,
                          fast=fast)
  else:
    raise ValueError(f"model.encoder: unknown architecture {model_config.encoder!r}; "
                     "expected 'mlp' or 'conv'")
  if model_config.head == "linear":
    head = LinearHead(num_classes)
  elif model_config.head == "mlp":
    head = MLPHead(num_classes, tuple(int(h) for h in model_config.head_hidden))
  elif model_config.head == "simplex":
    beta = float(model_config.witness_beta)
    if not beta > 0 or beta == float("inf"):
      raise ValueError(f"model.witness_beta: expected a finite gain > 0, got {beta}")
    if latent < num_classes - 1:
      raise ValueError(f"model.latent_dim: the simplex witness needs latent_dim >= K-1 = "
                       f"{num_classes - 1}, got {latent}")
    head = SimplexWitness(num_classes=num_classes, beta=beta)
  else:
    raise ValueError(f"model.head: unknown head {model_config.head!r}; expected 'linear', "
                     "'mlp' or 'simplex'")
  return TeacherGuidedVAE(encoder=encoder, decoder=decoder, head=head)


def init_params(model: TeacherGuidedVAE, rng: jax.Array, input_dim: int,
                num_classes: int) -> Any:
  """Parameters for a batch of one, under ``encoder`` / ``decoder`` / ``head``."""
  x = jnp.zeros((1, input_dim), jnp.float32)
  t = jnp.full((1, num_classes), 1.0 / num_classes, jnp.float32)
  return model.init(rng, x, t)["params"]
