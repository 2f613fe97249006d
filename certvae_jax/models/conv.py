"""Convolutional encoder and decoder for 32x32 and 64x64 images, with exact fast rewrites.

:class:`Downsample` (4x4, stride 2, padding 1) and its adjoint :class:`Upsample`
(PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)``) compute the same function with the same
parameters either way; ``fast=True`` writes them as matrix products (im2col after
space-to-depth; one product of all 16 taps, then a sub-pixel sum), because XLA:CPU runs
strided convolutions and their transposes through a slow dilated path. ``fast=False`` is
``lax.conv`` and its VJP, the reference. Measured per layer: the Speed page of the docs.
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
  """4x4 stride-2 padding-1 convolution; ``kernel`` is ``(4, 4, Cin, Cout)``.

  ``fast``: pad by 1 and space-to-depth by 2, so the layer is a 2x2 stride-1 VALID
  convolution over 4 Cin channels (``a = 2p + q`` splits each 4-tap axis into 2 taps
  of 2 phases); then im2col of those 2x2 taps and one matrix product.
  """
  if not fast:
    return _conv(x, kernel, 2, ((1, 1), (1, 1)))
  b, h, w, cin = x.shape
  cout = kernel.shape[3]
  ho, wo = h // 2, w // 2
  # kernel[2p_h + q_h, 2p_w + q_w] -> rows ordered (p_h, p_w, q_h, q_w, cin)
  k2 = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  xs = space_to_depth(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))  # (B, ho+1, wo+1, 4Cin)
  patches = jnp.concatenate([xs[:, ph:ph + ho, pw:pw + wo] for ph in (0, 1) for pw in (0, 1)],
                            axis=-1)
  y = patches.reshape(-1, 16 * cin) @ k2.reshape(16 * cin, cout)
  return y.reshape(b, ho, wo, cout)


# Per axis, output 2m + r collects (tap, input shift) pairs: y[2m] = w1 x[m] + w3 x[m-1],
# y[2m+1] = w2 x[m] + w0 x[m+1].
_UPSAMPLE_TAPS = {0: ((1, 0), (3, -1)), 1: ((2, 0), (0, 1))}


def upsample(x: jnp.ndarray, kernel: jnp.ndarray, fast: bool) -> jnp.ndarray:
  """The adjoint of :func:`downsample`: ``(B, H, W, Cin) -> (B, 2H, 2W, Cout)``.

  ``kernel`` is ``(4, 4, Cin, Cout)``: ``kernel[a, b]`` maps an input pixel's Cin
  channels to the Cout channels of the output pixel it reaches through tap (a, b).
  ``fast``: one matrix product gives every input pixel's 16 tap contributions, and each
  output phase (sub-pixel) sums four of them, shifted (GEMM + col2im). Its gradient uses a
  written-out transpose of the col2im (a ``jax.custom_vjp``), so ``fast`` supports
  reverse-mode differentiation only; use ``fast=False`` for ``jax.jvp`` through it.
  """
  b, h, w, cin = x.shape
  cout = kernel.shape[3]
  if not fast:
    # The transpose of the strided convolution C(u) = conv(u, kernel^T): XLA's path.
    k_c = kernel.transpose(0, 1, 3, 2)  # (4, 4, Cout, Cin)
    zeros = jnp.zeros((b, 2 * h, 2 * w, cout), x.dtype)
    _, vjp = jax.vjp(lambda u: _conv(u, k_c, 2, ((1, 1), (1, 1))), zeros)
    return vjp(x)[0]
  cols = x.reshape(-1, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, 16 * cout)
  return _col2im(cols.reshape(b, h, w, 4, 4, cout))


# Tap -> (output phase, input shift), the inverse view of _UPSAMPLE_TAPS.
_TAP_PHASE_SHIFT = {tap: (phase, shift) for phase, pairs in _UPSAMPLE_TAPS.items()
                    for tap, shift in pairs}


@jax.custom_vjp
def _col2im(cols: jnp.ndarray) -> jnp.ndarray:
  """``(B, H, W, 4, 4, C)`` tap products -> ``(B, 2H, 2W, C)``: each output phase sums four."""
  b, h, w, _, _, c = cols.shape
  cols = jnp.pad(cols, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
  phases = [[sum(cols[:, 1 + sh:1 + sh + h, 1 + sw:1 + sw + w, th, tw]
                 for th, sh in _UPSAMPLE_TAPS[rh] for tw, sw in _UPSAMPLE_TAPS[rw])
             for rw in (0, 1)] for rh in (0, 1)]
  y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, 2, W, 2, C)
  return y.reshape(b, 2 * h, 2 * w, c)


def _im2col(dy: jnp.ndarray) -> jnp.ndarray:
  """The transpose of :func:`_col2im`: each tap reads its phase of ``dy``, shifted back.

  Written out because XLA:CPU fuses autodiff's own transpose (pads of slices) into one
  gather that computes every element's source index: in the 32x32 conv VAE's train step
  (batch 128, 2-core x86-64 CPU) the four decoder layers' gathers took 33 ms; sixteen
  slices stacked on a new axis copy contiguous runs of channels and take 7.5 ms. The
  values are identical (a gather either way).
  """
  b, h2, w2, c = dy.shape
  h, w = h2 // 2, w2 // 2
  d = jnp.pad(dy.reshape(b, h, 2, w, 2, c), ((0, 0), (1, 1), (0, 0), (1, 1), (0, 0), (0, 0)))
  taps = []
  for th in range(4):
    rh, sh = _TAP_PHASE_SHIFT[th]
    for tw in range(4):
      rw, sw = _TAP_PHASE_SHIFT[tw]
      taps.append(d[:, 1 - sh:1 - sh + h, rh, 1 - sw:1 - sw + w, rw])
  return jnp.stack(taps, axis=3).reshape(b, h, w, 4, 4, c)


_col2im.defvjp(lambda cols: (_col2im(cols), None), lambda _, dy: (_im2col(dy),))


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
