"""Raw z-only witnesses ``s(z)`` (paper 1, section 2.3): they see the latent code only.

A head returns logits; the witness is ``softmax`` of them. The certificate is always
computed from such a head at ``z = mu(x)``; nothing else may feed it.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class LinearHead(nn.Module):
  """Linear witness: ``s(z) = softmax(W z + b)``."""
  num_classes: int

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    return nn.Dense(self.num_classes)(z)


class MLPHead(nn.Module):
  """MLP witness with ReLU hidden layers."""
  num_classes: int
  hidden: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    h = z
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.num_classes)(h)
