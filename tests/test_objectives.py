"""The objective's terms against float64 NumPy, and the pure step without a run around it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import log_softmax, softmax

from certvae_jax import objectives, registrations  # noqa: F401
from certvae_jax.models.vae import build_model, init_params
from certvae_jax.objectives import terms as losses
from certvae_jax.training import step as step_lib
from tests.conftest import tiny_config

RNG = np.random.default_rng(0)


def _rows(b, k):
  return softmax(RNG.normal(size=(b, k)) * 2, axis=1)


def test_gaussian_kl_matches_closed_form():
  mu, logvar = RNG.normal(size=(7, 5)), RNG.normal(size=(7, 5)) * 0.5
  ref = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar)
  got = jax.jit(losses.gaussian_kl_per_dim)(mu.astype(np.float32), logvar.astype(np.float32))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  assert float(losses.gaussian_kl(mu.astype(np.float32), logvar.astype(np.float32))) == \
      pytest.approx(ref.sum(1).mean(), rel=1e-5)


def test_bernoulli_and_gaussian_nll_match_numpy():
  logits, x = RNG.normal(size=(6, 9)) * 3, RNG.random((6, 9))
  p = 1 / (1 + np.exp(-logits))
  ref = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1)
  np.testing.assert_allclose(losses.bernoulli_nll_per_example(logits.astype(np.float32),
                                                              x.astype(np.float32)),
                             ref, rtol=1e-5)
  scale = 0.1
  ref_g = (0.5 * ((x - p) / scale) ** 2 + np.log(scale) + 0.5 * np.log(2 * np.pi)).sum(1)
  np.testing.assert_allclose(losses.gaussian_nll_per_example(
      logits.astype(np.float32), x.astype(np.float32), scale), ref_g, rtol=1e-5)


def test_alignment_and_balance_match_numpy():
  t, logits = _rows(8, 5), RNG.normal(size=(8, 5)) * 2
  ref_align = np.mean(np.sum(t * (np.log(t) - log_softmax(logits, axis=1)), axis=1))
  assert float(jax.jit(losses.alignment)(t.astype(np.float32), logits.astype(np.float32))) == \
      pytest.approx(ref_align, rel=1e-5)
  sbar = softmax(logits, axis=1).mean(0)
  ref_bal = np.sum(sbar * np.log(sbar / (1 / 5)))
  assert float(jax.jit(losses.balance)(logits.astype(np.float32))) == pytest.approx(ref_bal,
                                                                                     abs=1e-6)


def _model_and_params(config, k=4, d=12):
  model = build_model(config.model, d, k)
  return model, init_params(model, jax.random.PRNGKey(0), d, k)


def test_teacher_guided_loss_is_the_weighted_sum_of_its_terms():
  """L = rec + alpha_KL KL + lambda_TS L_align + lambda_bal L_bal (paper 1, section 3),
  each term recomputed by hand in float64 from the model's own outputs."""
  config = tiny_config()
  model, params = _model_and_params(config)
  obj = objectives.build("teacher_guided", model, config)
  x, t = RNG.random((16, 12)).astype(np.float32), _rows(16, 4).astype(np.float32)
  rng = jax.random.PRNGKey(3)
  weights = step_lib.as_weights({"alpha_kl": 2.0, "lambda_ts": 3.0, "lambda_bal": 0.5})
  total, terms = jax.jit(obj.loss)(params, {"x": x, "t": t}, rng, weights)
  v = {"params": params}
  mu, logvar = model.apply(v, x, method=model.encode)
  z = mu + np.exp(0.5 * np.asarray(logvar, np.float64)) * np.asarray(
      jax.random.normal(rng, mu.shape), np.float64)
  out = np.asarray(model.apply(v, jnp.asarray(z, jnp.float32), t, method=model.decode), np.float64)
  p = 1 / (1 + np.exp(-out))
  rec = np.mean(-(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1))
  mu64, lv64 = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
  kl = np.mean(0.5 * (np.exp(lv64) + mu64**2 - 1 - lv64).sum(1))
  logits = np.asarray(model.apply(v, jnp.asarray(z, jnp.float32), method=model.witness_logits),
                      np.float64)
  align = np.mean(np.sum(t * (np.log(t) - log_softmax(logits, axis=1)), axis=1))
  sbar = softmax(logits, axis=1).mean(0)
  bal = np.sum(sbar * np.log(sbar * 4))
  for name, ref in (("rec", rec), ("kl", kl), ("align", align), ("bal", bal)):
    assert float(terms[name]) == pytest.approx(ref, rel=2e-4, abs=1e-5), name
  assert float(total) == pytest.approx(rec + 2 * kl + 3 * align + 0.5 * bal, rel=2e-4)


def test_code_regression_loss_matches_numpy():
  config = tiny_config()
  config.model.head, config.model.latent_dim = "simplex", 6
  model, params = _model_and_params(config, k=4)
  obj = objectives.build("code_regression", model, config)
  assert obj.weight_names == ()
  x, t = RNG.random((10, 12)).astype(np.float32), _rows(10, 4).astype(np.float32)
  loss, terms = obj.loss(params, {"x": x, "t": t}, None, {})
  mu = np.asarray(model.apply({"params": params}, x, method=model.encode)[0], np.float64)
  from certvae_jax import simplex  # pylint: disable=import-outside-toplevel
  code = np.asarray(simplex.analytic_code(t.astype(np.float64), config.model.witness_beta))
  ref = np.mean(np.sum((mu[:, :3] - code) ** 2, 1) + np.sum(mu[:, 3:] ** 2, 1))
  assert float(loss) == float(terms["code_mse"]) == pytest.approx(ref, rel=1e-4)


def _state_and_step(config, weights, **step_kwargs):
  model, params = _model_and_params(config)
  obj = objectives.build("teacher_guided", model, config)
  tx = optax.adam(1e-3)
  state = step_lib.init_state(params, tx, jax.random.PRNGKey(1), weights)
  return obj, tx, state, step_lib.make_train_step(obj, tx, **step_kwargs)


def test_train_step_is_one_optax_update_with_the_states_weights():
  config = tiny_config()
  weights = {"alpha_kl": 1.5, "lambda_ts": 2.0, "lambda_bal": 0.25}
  obj, tx, state, train_step = _state_and_step(config, weights)
  batch = {"x": RNG.random((16, 12)).astype(np.float32),
           "t": _rows(16, 4).astype(np.float32)}
  # By hand: same key schedule, same gradient, one Adam update.
  rng = jax.random.fold_in(state.rng, 0)
  (loss, _), grads = jax.value_and_grad(obj.loss, has_aux=True)(
      state.params, batch, rng, step_lib.as_weights(weights))
  updates, _ = tx.update(grads, state.opt_state, state.params)
  expected = optax.apply_updates(state.params, updates)
  new, metrics = train_step(state, batch)
  assert int(new.step) == 1 and int(new.skipped) == 0
  assert {k: float(v) for k, v in new.weights.items()} == weights
  assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
  assert float(metrics["weight/lambda_ts"]) == 2.0
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_weight_schedule_is_applied_inside_the_step_and_base_weights_kept():
  config = tiny_config()
  ramp = lambda w, step: dict(w, alpha_kl=w["alpha_kl"] * jnp.minimum(1.0, step / 10))  # noqa: E731
  _, _, state, train_step = _state_and_step(
      config, {"alpha_kl": 4.0, "lambda_ts": 1.0, "lambda_bal": 0.0}, schedule=ramp)
  batch = {"x": RNG.random((8, 12)).astype(np.float32), "t": _rows(8, 4).astype(np.float32)}
  seen = []
  for _ in range(3):
    state, metrics = train_step(state, batch)
    seen.append(float(metrics["weight/alpha_kl"]))
  assert seen == pytest.approx([0.0, 0.4, 0.8])
  assert float(state.weights["alpha_kl"]) == 4.0


def test_skip_nonfinite_keeps_parameters_and_counts():
  config = tiny_config()
  _, _, state, train_step = _state_and_step(
      config, {"alpha_kl": 1.0, "lambda_ts": 1.0, "lambda_bal": 0.0}, skip_nonfinite=True)
  before = jax.tree.map(np.asarray, state.params)
  x = RNG.random((8, 12)).astype(np.float32)
  x[0, 0] = np.nan
  new, metrics = train_step(state, {"x": x, "t": _rows(8, 4).astype(np.float32)})
  assert int(new.skipped) == 1 and int(new.step) == 1 and float(metrics["loss"]) == 0.0
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)


def test_unknown_objective_is_a_value_error():
  config = tiny_config()
  model, _ = _model_and_params(config)
  with pytest.raises(ValueError, match="objective: unknown 'nope'"):
    objectives.build("nope", model, config)
