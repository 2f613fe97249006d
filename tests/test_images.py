"""Image data and conv models (issue 4): exact conv rewrites, TFDS via mock data (the image
configs run end to end in test_launchers.py)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from certvae_jax import data, objectives
from certvae_jax.models import conv, vae
from configs import cifar100


@pytest.mark.parametrize("h,w,cin,cout", [(8, 8, 3, 5), (16, 16, 4, 2), (2, 2, 6, 3),
                                           (4, 8, 3, 2)])
def test_fast_strided_conv_equals_plain(h, w, cin, cout):
  rng = np.random.default_rng(h + w)
  x = jnp.asarray(rng.normal(size=(2, h, w, cin)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, cin, cout)) * 0.3, jnp.float32)
  np.testing.assert_allclose(conv.downsample(x, k, True), conv.downsample(x, k, False),
                             atol=3e-6)
  y = jnp.asarray(rng.normal(size=(2, h, w, cin)), jnp.float32)
  up_fast, up_plain = conv.upsample(y, k, True), conv.upsample(y, k, False)
  assert up_fast.shape == (2, 2 * h, 2 * w, cout)
  np.testing.assert_allclose(up_fast, up_plain, atol=3e-6)


@pytest.mark.parametrize("layer", [conv.downsample, conv.upsample])
def test_fast_strided_conv_gradients_equal_plain(layer):
  """Training differentiates the fast forms: their gradients must match too."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, 4, 3)) * 0.3, jnp.float32)
  r = jnp.asarray(rng.normal(size=layer(x, k, False).shape), jnp.float32)

  def grads(fast):
    return jax.grad(lambda x, k: jnp.sum(jnp.tanh(layer(x, k, fast)) * r), argnums=(0, 1))(x, k)

  for fast_g, plain_g in zip(grads(True), grads(False)):
    np.testing.assert_allclose(fast_g, plain_g, rtol=1e-5, atol=1e-5)


def test_upsample_is_the_adjoint_of_downsample():
  rng = np.random.default_rng(1)
  k = jnp.asarray(rng.normal(size=(4, 4, 3, 2)), jnp.float32)
  u = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)  # downsample input
  v = jnp.asarray(rng.normal(size=(1, 4, 4, 3)), jnp.float32)  # upsample input
  # <down(u; k^T), v> == <u, up(v; k)> with k^T swapping the channel axes.
  lhs = jnp.sum(conv.downsample(u, k.transpose(0, 1, 3, 2), True) * v)
  rhs = jnp.sum(u * conv.upsample(v, k, True))
  assert float(lhs) == pytest.approx(float(rhs), rel=1e-5)


@pytest.mark.parametrize("h,w,c", [(1, 1, 2), (2, 3, 4), (4, 4, 3)])
def test_upsample_written_out_transpose_is_the_exact_adjoint(h, w, c):
  """The fast upsample's backward pass is a hand-written gather; it must be col2im's adjoint.

  Small integers keep every product and sum exact in float32, so the two inner products
  agree exactly, and the gradient through ``jax.grad`` is that gather.
  """
  rng = np.random.default_rng(h * 10 + w)
  cols = jnp.asarray(rng.integers(-4, 5, size=(2, h, w, 4, 4, c)), jnp.float32)
  dy = jnp.asarray(rng.integers(-4, 5, size=(2, 2 * h, 2 * w, c)), jnp.float32)
  assert float(jnp.sum(conv._col2im(cols) * dy)) == float(jnp.sum(cols * conv._im2col(dy)))
  grad = jax.grad(lambda z: jnp.sum(conv._col2im(z) * dy))(cols)
  np.testing.assert_array_equal(grad, conv._im2col(dy))


def test_conv_encoder_decoder_fast_equal_plain_with_same_parameters():
  shape, channels = (32, 32, 3), (8, 16, 32)
  x = jnp.asarray(np.random.default_rng(0).random((2, 32 * 32 * 3)), jnp.float32)
  enc_f = conv.ConvEncoder(shape, channels, 16, fast=True)
  enc_p = conv.ConvEncoder(shape, channels, 16, fast=False)
  params = enc_f.init(jax.random.PRNGKey(0), x)
  for a, b in zip(enc_f.apply(params, x), enc_p.apply(params, x)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  z = jnp.ones((2, 16))
  dec_f = conv.ConvDecoder(shape, channels, fast=True)
  dec_p = conv.ConvDecoder(shape, channels, fast=False)
  dp = dec_f.init(jax.random.PRNGKey(1), z)
  out = dec_f.apply(dp, z)
  assert out.shape == (2, 32 * 32 * 3)
  np.testing.assert_allclose(out, dec_p.apply(dp, z), atol=1e-5)


def test_tfds_source_reads_images_and_labels_through_data_source():
  with tfds.testing.mock_data(num_examples=40):
    d = data.load_dataset("tfds:cifar100")
  assert d.x_train.shape == (40, 32 * 32 * 3) and d.x_train.dtype == np.uint8
  assert d.example_shape == (32, 32, 3) and d.y_train.shape == (40,)
  assert len(d.x_test) == 40


def test_unprepared_or_unknown_tfds_data_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="not prepared.*download_and_prepare"):
    data.load_dataset("tfds:cifar100", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="TFDS has no dataset 'no_such_set_xyz'"):
    data.load_dataset("tfds:no_such_set_xyz", data_dir=str(tmp_path))


def test_forward_mode_through_the_conv_witness_path_with_fast_convs():
  """The rescue diagnostics' ``jax.jvp`` reads the witness path (encoder and head), which
  the fast conv rewrites support; the fast decoder is reverse-mode only."""
  cfg = cifar100.get_config("smoke")
  shape, k = (32, 32, 3), 10
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((4, 32 * 32 * 3)), jnp.float32)
  t = jnp.asarray(rng.dirichlet(np.ones(k), 4), jnp.float32)
  jvps = []
  for fast in (True, False):
    cfg.model.fast_conv = fast
    model = vae.build_model(cfg.model, 32 * 32 * 3, k, shape)
    objective = objectives.build("teacher_guided", model, cfg)
    if fast:
      params = vae.init_params(model, jax.random.PRNGKey(0), 32 * 32 * 3, k)
      direction = jax.tree.map(jnp.ones_like, params)
    jvps.append(jax.jvp(lambda p: objective.witness_logits(p, x, t), (params,), (direction,)))
    if fast:
      with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda p: objective.evaluate(p, x, t, jax.random.PRNGKey(0))["rec"],
                (params,), (direction,))
  (fast_out, fast_tangent), (plain_out, plain_tangent) = jvps
  assert float(jnp.max(jnp.abs(fast_tangent))) > 0
  np.testing.assert_allclose(fast_out, plain_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fast_tangent, plain_tangent, rtol=1e-4, atol=1e-4)
