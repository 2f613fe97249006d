"""Convolutional encoder and decoder for 32x32 and 64x64 images, with exact fast rewrites.

XLA:CPU runs stride-2 convolutions, and above all their transposes, through a slow
dilated path (PERF-NOTES: 60-90 ms per op at 2x2 and 4x4 resolution). The two layers
here compute exactly the same function with the same parameters either way:

* :class:`Downsample` - a 4x4, stride-2, padding-1 convolution. ``fast``: pad by 1,
  space-to-depth by 2, then a 2x2 stride-1 VALID convolution with the kernel
  rearranged (``a = 2p + q`` splits each 4-tap axis into 2 taps of 2 phases).
* :class:`Upsample` - the transposed convolution, defined as the exact adjoint of
  ``Downsample`` (PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)``). Per axis
  ``y[2m] = w1 x[m] + w3 x[m-1]`` and ``y[2m+1] = w0 x[m+1] + w2 x[m]``; ``fast``
  computes the four phases as 2x2 stride-1 convolutions and interleaves them
  (sub-pixel decomposition), instead of XLA's dilated transpose.

``fast=False`` is the plain formulation (``lax.conv`` and its VJP), kept for the
equality test and as a reference on accelerators, where both paths are fast.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jnp.ndarray, w: jnp.ndarray, stride: int, padding) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DN)


def space_to_depth(x: jnp.ndarray) -> jnp.ndarray:
  """``(B, H, W, C) -> (B, H/2, W/2, 4C)`` with channel order ``(q_h, q_w, C)``."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def downsample(x: jnp.ndarray, kernel: jnp.ndarray, fast: bool) -> jnp.ndarray:
  """4x4 stride-2 padding-1 convolution; ``kernel`` is ``(4, 4, Cin, Cout)``."""
  if not fast:
    return _conv(x, kernel, 2, ((1, 1), (1, 1)))
  cin, cout = kernel.shape[2:]
  # kernel[2p_h + q_h, 2p_w + q_w] -> k2[p_h, p_w, (q_h, q_w, cin)]
  k2 = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  k2 = k2.reshape(2, 2, 4 * cin, cout)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return _conv(space_to_depth(xp), k2, 1, "VALID")


def upsample(x: jnp.ndarray, kernel: jnp.ndarray, fast: bool) -> jnp.ndarray:
  """The adjoint of :func:`downsample`: ``(B, H, W, Cin) -> (B, 2H, 2W, Cout)``.

  ``kernel`` is ``(4, 4, Cin, Cout)``: ``kernel[a, b]`` maps an input pixel's Cin
  channels to the Cout channels of the output pixel it reaches through tap (a, b).
  """
  b, h, w, _ = x.shape
  cout = kernel.shape[3]
  if not fast:
    # The transpose of the strided convolution C(u) = conv(u, kernel^T): XLA's path.
    k_c = kernel.transpose(0, 1, 3, 2)  # (4, 4, Cout, Cin)
    zeros = jnp.zeros((b, 2 * h, 2 * w, cout), x.dtype)
    _, vjp = jax.vjp(lambda u: _conv(u, k_c, 2, ((1, 1), (1, 1))), zeros)
    return vjp(x)[0]
  # Per axis: even outputs read taps [m-1, m] with weights [w3, w1] (pad 1 before);
  # odd outputs read [m, m+1] with [w2, w0] (pad 1 after).
  taps = {0: ([3, 1], (1, 0)), 1: ([2, 0], (0, 1))}
  phases = []
  for rh in (0, 1):
    row = []
    for rw in (0, 1):
      (ih, ph), (iw, pw) = taps[rh], taps[rw]
      k = kernel[jnp.array(ih)][:, jnp.array(iw)]  # (2, 2, Cin, Cout)
      xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
      row.append(_conv(xp, k, 1, "VALID"))
    phases.append(jnp.stack(row, axis=3))  # (B, H, W, 2[rw], C)
  y = jnp.stack(phases, axis=2)  # (B, H, 2[rh], W, 2[rw], C)
  return y.reshape(b, 2 * h, 2 * w, cout)


class Downsample(nn.Module):
  """Learned 4x4 stride-2 convolution (see :func:`downsample`)."""
  features: int
  fast: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return downsample(x, kernel.astype(x.dtype), self.fast) + bias


class Upsample(nn.Module):
  """Learned 4x4 stride-2 transposed convolution (see :func:`upsample`)."""
  features: int
  fast: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
                        (4, 4, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return upsample(x, kernel.astype(x.dtype), self.fast) + bias


class ConvEncoder(nn.Module):
  """Stride-2 convolutions (ReLU) then dense ``mu`` and ``logvar``.

  Attributes:
    image_shape: ``(H, W, C)``; inputs arrive flattened and are reshaped.
    channels: output channels of each stride-2 stage (H and W must divide by 2^stages).
    latent_dim: dimension of ``z``.
    fast: use the exact fast rewrite of the strided convolution.
  """
  image_shape: Sequence[int]
  channels: Sequence[int]
  latent_dim: int
  fast: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    h = x.reshape((x.shape[0],) + tuple(self.image_shape))
    for c in self.channels:
      h = nn.relu(Downsample(c, self.fast)(h))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.latent_dim, name="mu")(h), nn.Dense(self.latent_dim, name="logvar")(h)


class ConvDecoder(nn.Module):
  """Dense to the smallest feature map, then stride-2 transposed convolutions.

  Returns flattened per-pixel parameters (Bernoulli logits, or Gaussian means before
  the sigmoid). With ``reads_teacher`` the teacher vector is concatenated to ``z``.
  """
  image_shape: Sequence[int]
  channels: Sequence[int]  # the encoder's, mirrored here
  reads_teacher: bool = False
  fast: bool = True

  @nn.compact
  def __call__(self, z: jnp.ndarray, t: jnp.ndarray | None = None) -> jnp.ndarray:
    height, width, out_c = self.image_shape
    n = len(self.channels)
    if self.reads_teacher:
      if t is None:
        raise ValueError("t: this decoder reads the teacher vector; pass t of shape (B, K)")
      z = jnp.concatenate([z, t.astype(z.dtype)], axis=-1)
    h0, w0 = height >> n, width >> n
    h = nn.relu(nn.Dense(h0 * w0 * self.channels[-1])(z))
    h = h.reshape(z.shape[0], h0, w0, self.channels[-1])
    for c in list(self.channels[-2::-1]):
      h = nn.relu(Upsample(c, self.fast)(h))
    h = Upsample(out_c, self.fast)(h)
    return h.reshape(z.shape[0], -1)
