"""Paper 1, appendix H's rescue diagnostics against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax.evaluation.rescue_diagnostics import rescue_diagnostics


def test_rescue_diagnostics_match_numpy_on_a_linear_witness():
  rng = np.random.default_rng(0)
  n, d, k = 40, 5, 4
  x = rng.normal(size=(n, d))
  t = rng.dirichlet(np.ones(k), size=n)
  params = {"encoder": {"w": rng.normal(size=(d, k)) * 0.3}, "head": {"b": rng.normal(size=k)},
            "decoder": {"v": np.ones(3)}}
  jparams = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  logits_fn = lambda p, xb: xb @ p["encoder"]["w"] + p["head"]["b"]  # noqa: E731
  got = rescue_diagnostics(logits_fn, jparams, jnp.asarray(x, jnp.float32),
                           jnp.asarray(t, jnp.float32))
  logits = x @ params["encoder"]["w"] + params["head"]["b"]
  s = np.exp(logits - logits.max(1, keepdims=True))
  s /= s.sum(1, keepdims=True)
  g = (s - t) / n                      # d mean KL(t || softmax) / d logits
  dw, db = x.T @ g, g.sum(0)
  delta = x @ -dw - db
  delta -= delta.mean(1, keepdims=True)
  varying = delta - delta.mean(0)
  centred = t - t.mean(0)
  corr = np.sum(varying * centred) / (np.linalg.norm(varying) * np.linalg.norm(centred))
  assert got["align_grad_norm"] == pytest.approx(np.sqrt(np.sum(dw**2) + np.sum(db**2)),
                                                 rel=1e-4)
  assert got["response_correlation"] == pytest.approx(corr, abs=1e-4)
  assert got["input_dependent_fraction"] == pytest.approx(
      np.linalg.norm(varying) / np.linalg.norm(delta), rel=1e-4)
  assert got["alignment"] == pytest.approx(np.mean(np.sum(t * np.log(t / s), 1)), rel=1e-4)
  assert got["rows"] == n


def test_rescue_diagnostics_are_zero_for_an_input_independent_witness():
  """A fully collapsed encoder (zero weights) gives no input-dependent logit response."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(30, 5)), jnp.float32)
  t = jnp.asarray(rng.dirichlet(np.ones(3), size=30), jnp.float32)
  params = {"encoder": {"w": jnp.zeros((5, 3))}, "head": {"b": jnp.zeros(3)}}
  # The logits ignore x entirely: only the bias can move, the same for every row.
  got = rescue_diagnostics(lambda p, xb: 0 * xb[:, :3] + p["head"]["b"], params, x, t)
  assert got["response_correlation"] == pytest.approx(0.0, abs=1e-6)
  assert got["input_dependent_fraction"] == pytest.approx(0.0, abs=1e-6)
  assert got["align_grad_norm"] > 0  # the bias still moves, towards a better constant
