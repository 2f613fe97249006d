"""MLP encoder and decoder for flat inputs (the digits reference model)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLPEncoder(nn.Module):
  """Gaussian encoder ``q(z|x) = N(mu(x), diag exp(logvar(x)))``.

  Attributes:
    hidden: widths of the hidden ReLU layers.
    latent_dim: dimension of ``z``.
  """
  hidden: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    h = x
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.latent_dim, name="mu")(h), nn.Dense(self.latent_dim, name="logvar")(h)


class MLPDecoder(nn.Module):
  """Decoder producing Bernoulli logits of ``p(x|z)`` or, with a bypass, ``p(x|z, t)``.

  Attributes:
    hidden: widths of the hidden ReLU layers (mirrored encoder).
    out_dim: number of output features.
    reads_teacher: concatenate the teacher vector ``t`` to ``z`` (paper 1, section 1:
      the decoder may read ``T(x)``, a route that bypasses the latent code).
  """
  hidden: Sequence[int]
  out_dim: int
  reads_teacher: bool = False

  @nn.compact
  def __call__(self, z: jnp.ndarray, t: jnp.ndarray | None = None) -> jnp.ndarray:
    h = z
    if self.reads_teacher:
      if t is None:
        raise ValueError("t: this decoder reads the teacher vector; pass t of shape (B, K)")
      h = jnp.concatenate([z, t.astype(z.dtype)], axis=-1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.out_dim)(h)
