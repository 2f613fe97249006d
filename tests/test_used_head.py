"""The shared-safe used head (paper 1, section 3 and appendix E.9): constancy preserved,
switched by the raw margin, grafted onto a rescue's restored state, resumed exactly, and
never read by the certificate."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from certvae_jax import objectives, train
from certvae_jax.configs import schema
from certvae_jax.experiments import protocol
from certvae_jax.guard import objective as guard_objective, used_head as used_head_ext
from certvae_jax.models.vae import build_model, init_params
from certvae_jax.objectives import used_head
from certvae_jax.training import extensions, loop, step as step_lib, writers
from certvae_jax.training.checkpoint import Checkpointer
from tests.conftest import copy_seed, tiny_config


def _preserves_constancy(map_rows, raw_row: np.ndarray, n: int) -> bool:
  """Whether ``map_rows`` sends ``n`` equal raw rows to ``n`` equal rows."""
  out = np.asarray(jax.nn.softmax(map_rows(jnp.tile(raw_row, (n, 1))), axis=-1))
  return bool(np.allclose(out, out[:1], rtol=0, atol=1e-6))


@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 12), n=st.integers(2, 9), seed=st.integers(0, 2**31 - 1),
       log_temperature=st.floats(-3, 3), scale=st.floats(0, 5))
def test_equal_raw_rows_give_equal_used_rows(k, n, seed, log_temperature, scale):
  rng = np.random.default_rng(seed)
  params = {"log_temperature": jnp.float32(log_temperature),
            "bias": jnp.asarray(scale * rng.normal(size=k), jnp.float32)}
  raw = rng.normal(scale=3, size=k).astype(np.float32)
  assert _preserves_constancy(lambda logits: used_head.calibrate(params, logits), raw, n)
  # The property can fail: the identity calibration with a bias of its own per row
  # (a row-dependent map) breaks it.
  row_bias = jnp.asarray(rng.normal(size=(n, k)), jnp.float32)
  assert not _preserves_constancy(
      lambda logits: used_head.calibrate(used_head.init_params(k), logits) + row_bias, raw, n)


def test_the_used_head_starts_at_the_identity_and_is_off_without_its_weight():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
  params = {used_head.USED_HEAD: used_head.init_params(4)}
  np.testing.assert_allclose(jax.nn.softmax(used_head.calibrate(params["used_head"], logits)),
                             jax.nn.softmax(logits), atol=1e-6)
  moved = {"used_head": {"log_temperature": jnp.float32(1.0), "bias": jnp.arange(4.0)}}
  assert used_head.alignment_logits(moved, logits, {}) is logits
  off = used_head.alignment_logits(moved, logits, {"used_head": jnp.float32(0.0)})
  on = used_head.alignment_logits(moved, logits, {"used_head": jnp.float32(1.0)})
  np.testing.assert_array_equal(off, logits)
  np.testing.assert_allclose(on, np.e * jax.nn.log_softmax(logits) + np.arange(4.0),
                             rtol=1e-6)


def test_the_loss_aligns_the_used_head_while_its_weight_is_on():
  cfg = tiny_config()
  model = build_model(cfg.model, 64, 10, (8, 8))
  objective = used_head.with_used_head(objectives.build("teacher_guided", model, cfg))
  params = dict(init_params(model, jax.random.PRNGKey(0), 64, 10),
                used_head={"log_temperature": jnp.float32(0.7), "bias": jnp.linspace(-1, 1, 10)})
  rng = np.random.default_rng(1)
  t = rng.dirichlet(np.ones(10), size=8).astype(np.float32)
  batch = {"x": jnp.asarray(rng.uniform(size=(8, 64)), jnp.float32), "t": jnp.asarray(t)}
  weights = {"alpha_kl": 1.0, "lambda_ts": 2.0, "lambda_bal": 0.0}
  key = jax.random.PRNGKey(3)
  for on in (0.0, 1.0):
    total, terms = objective.loss(params, batch, key, dict(weights, used_head=on))
    expected_align = terms["used_align"] if on else terms["align"]
    np.testing.assert_allclose(total, terms["rec"] + terms["kl"] + 2.0 * expected_align,
                               rtol=1e-5)
  assert not np.isclose(terms["used_align"], terms["align"])
  # Off, the used head's parameters get no gradient; on, they do.
  for on, moves in ((0.0, False), (1.0, True)):
    grads = jax.grad(lambda p: objective.loss(p, batch, key, dict(weights, used_head=on))[0])(
        params)
    assert bool(np.any(np.asarray(grads["used_head"]["bias"]) != 0)) == moves


def test_student_first_steps_train_the_used_head_and_its_alignment():
  """Under the guard, a student-first step minimises the alignment the total trains (the
  used head's while it is on) and moves the calibration with the encoder and the head."""
  cfg = tiny_config()
  model = build_model(cfg.model, 64, 10, (8, 8))
  objective = guard_objective.guarded(
      used_head.with_used_head(objectives.build("teacher_guided", model, cfg)), tau=0.05)
  params = dict(init_params(model, jax.random.PRNGKey(0), 64, 10),
                used_head={"log_temperature": jnp.float32(0.5), "bias": jnp.linspace(-1, 1, 10)})
  rng = np.random.default_rng(2)
  batch = {"x": jnp.asarray(rng.uniform(size=(8, 64)), jnp.float32),
           "t": jnp.asarray(rng.dirichlet(np.ones(10), size=8), jnp.float32)}
  weights = {"alpha_kl": 1.0, "lambda_ts": 2.0, "lambda_bal": 0.5, "used_head": 1.0,
             "student_first": 1.0}
  total, terms = objective.loss(params, batch, jax.random.PRNGKey(3), weights)
  np.testing.assert_allclose(total, 2.0 * terms["used_align"] + 0.5 * terms["bal"], rtol=1e-6)
  assert not np.isclose(terms["used_align"], terms["align"])
  ones = jax.tree.map(jnp.ones_like, params)
  gated = objective.gate_updates(ones, weights)
  for group in ("encoder", "head", "used_head"):
    assert all(np.all(np.asarray(u) == 1) for u in jax.tree.leaves(gated[group])), group
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(gated["decoder"]))


def test_grafted_parameters_start_fresh_and_the_rest_keep_their_optimizer_state():
  tx = optax.adam(1e-2)
  params = {"encoder": {"w": jnp.ones((3,))}, "head": {"b": jnp.zeros((2,))}}
  state = step_lib.init_state(params, tx, jax.random.PRNGKey(0), {"lambda_ts": 1.0})
  grads = {"encoder": {"w": jnp.asarray([1.0, -2.0, 3.0])}, "head": {"b": jnp.ones((2,))}}
  _, opt_state = tx.update(grads, state.opt_state, params)
  state = state.replace(opt_state=opt_state)
  plan = used_head_ext.UsedHeadPlan(tiny_config(used_head="shared_safe"))
  grown = extensions.with_params(state, (plan,), 2, tx)
  assert set(grown.params) == {"encoder", "head", "used_head"}
  np.testing.assert_array_equal(grown.params["used_head"]["bias"], np.zeros(2))
  adam, grown_adam = state.opt_state[0], grown.opt_state[0]
  assert int(grown_adam.count) == int(adam.count) == 1
  for part in ("mu", "nu"):
    for group in ("encoder", "head"):
      for a, b in zip(jax.tree.leaves(getattr(adam, part)[group]),
                      jax.tree.leaves(getattr(grown_adam, part)[group])):
        np.testing.assert_array_equal(a, b)
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(getattr(grown_adam, part)["used_head"]))
  assert extensions.with_params(grown, (plan,), 2, tx) is grown  # nothing to add


class _Scripted(loop.Hook):
  """Evaluates and saves every 5 steps; at ``rollback_at`` (once) goes back to ``to``, as
  a guard's rollback does."""

  def __init__(self, rollback_at: int, to: int):
    self.rollback_at, self.to = rollback_at, to

  def wants_sync(self, step, last):
    return step % 5 == 0 or last

  def on_sync(self, lp, step, rows):
    lp.evaluate()
    lp.save()
    if step == self.rollback_at:
      self.rollback_at = None
      lp.checkpointer.discard_after(self.to)
      return loop.Restore(self.to)
    return None


def test_a_rollback_takes_the_used_head_record_back_to_the_restored_step(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  weights = {"lambda_ts": 5.0, used_head.USED_HEAD: 0.0}
  state = step_lib.TrainState(step=jnp.asarray(0, jnp.int32), params={"t": jnp.float32(0)},
                              opt_state=(), rng=jnp.zeros(2, jnp.uint32),
                              skipped=jnp.asarray(0, jnp.int32),
                              weights=step_lib.as_weights(weights))
  # Train margins at steps 5, 10, 15 | (back to 10) 15, 20.
  margins = [0.5, 0.5, -0.2, 0.5, 0.5]
  hook = used_head_ext.UsedHeadHook(0.0, start_margin=lambda params: -1.0)
  lp = loop.Loop(state, lambda st, step, n=1: (st.replace(step=st.step + n), {}), 20,
                 [hook, _Scripted(rollback_at=15, to=10)],
                 evaluate=lambda st, step: ({"train": {"margin": margins.pop(0)}}, {}),
                 save=lambda s, st, extra: ckpt.save(s, st, dict(extra)),
                 restore=lambda s: ckpt.restore(jax.eval_shape(lambda: state), s),
                 put_weights=step_lib.as_weights, checkpointer=ckpt)
  final = lp.run()
  ckpt.close()
  # On from 0 to 5, off from 5 to 20 on the branch kept; switched on at 15 on the branch
  # abandoned there, which counts for nothing: 5 steps, 2 switches, 4 evaluations.
  assert not margins and float(final.weights[used_head.USED_HEAD]) == 0.0
  summary = hook.summary()
  assert summary["active_steps"] == 5, summary
  assert (summary["switches"], summary["evaluations"], summary["active_evaluations"]) == (
      2, 4, 0), summary
  assert summary["first_active_step"] == 0


@pytest.mark.parametrize("value", ["bogus", "Shared_Safe"])
def test_an_unknown_used_head_is_a_value_error(value):
  cfg = tiny_config(used_head=value)
  with pytest.raises(ValueError, match="config.train.used_head"):
    schema.validate(cfg)


def test_an_objective_that_does_not_align_through_the_used_head_is_refused():
  cfg = tiny_config()
  plain = objectives.build("teacher_guided", build_model(cfg.model, 64, 10, (8, 8)), cfg)
  with pytest.raises(ValueError, match="config.train.used_head"):
    used_head.with_used_head(plain._replace(used_head=False))


class _CrashOnce(loop.Hook):
  def __init__(self, at):
    self.at = at

  def on_sync(self, lp, step, rows):
    if step >= self.at and lp.name.startswith("rescue"):
      raise KeyboardInterrupt(f"simulated kill at step {step}")


def _shared_safe():
  return tiny_config(used_head="shared_safe")


@pytest.fixture(scope="module")
def noalign_dir(seed_dir, tmp_path_factory):
  """The seed directory with a finished ``noalign`` run (copy it for each rescue)."""
  wd = copy_seed(seed_dir, str(tmp_path_factory.mktemp("noalign") / "wd"))
  train.train(tiny_config(), "noalign", wd)
  return wd


def test_shared_safe_rescue_trains_the_used_head_and_certifies_the_raw_one(noalign_dir,
                                                                           tmp_path):
  wd = copy_seed(noalign_dir, str(tmp_path / "r"))
  noalign = train.train(tiny_config(), "noalign", wd)  # finished: its summary as saved
  assert noalign["test"]["margin"] <= 0  # a collapsed start: the used head switches on
  s = train.train(_shared_safe(), "rescue", wd)
  u = s["used_head"]
  assert u["first_active_step"] == noalign["step"] and u["switches"] >= 1
  assert 0 < u["active_steps"] <= s["step"] - noalign["step"]
  rows = writers.read_jsonl(os.path.join(wd, "rescue_shared_safe", "metrics.jsonl"))
  assert [r["action"] for r in rows if r.get("event") == "used_head"][0] == "on"
  for r in (r for r in rows if "test/margin" in r):
    for split in ("train", "test"):
      np.testing.assert_allclose(r[f"{split}/used_margin"],
                                 r[f"{split}/teacher_mi"] - r[f"{split}/tau"]
                                 - r[f"{split}/used_alignment"], rtol=0, atol=1e-12)
  # The certificate is the raw head's: recomputed in float64 from the saved raw rows.
  saved = np.load(os.path.join(wd, "rescue_shared_safe", "predictions.npz"))
  t, w = saved["test_teacher"].astype(np.float64), saved["test_witness"].astype(np.float64)
  tbar = t.mean(0)
  i_t = np.mean(np.sum(t * (np.log(np.where(t > 0, t, 1)) - np.log(tbar)), 1))
  l_ts = np.mean(np.sum(t * (np.log(np.where(t > 0, t, 1)) - np.log(w)), 1))
  np.testing.assert_allclose(s["test"]["margin"], i_t - 0.05 - l_ts, rtol=0, atol=2e-5)
  assert s["test"]["used_margin"] != s["test"]["margin"]
  # The noalign checkpoint is untouched; the rescue's holds the used head.
  with Checkpointer(os.path.join(wd, "rescue_shared_safe", "checkpoints")) as ckpt:
    state, _ = train.Runner(_shared_safe(), wd).restore(ckpt, 10, s["step"], "rescue")
  assert set(state.params["used_head"]) == {"log_temperature", "bias"}
  assert float(np.exp(state.params["used_head"]["log_temperature"])) == pytest.approx(
      s["test"]["used_temperature"])


def test_a_killed_shared_safe_rescue_resumes_bit_for_bit(noalign_dir, tmp_path):
  runs = []
  for name, kill in (("a", None), ("b", 70)):
    wd = copy_seed(noalign_dir, str(tmp_path / name))
    if kill is not None:
      with pytest.raises(KeyboardInterrupt):
        train.train(_shared_safe(), "rescue", wd, hooks=[_CrashOnce(kill)])
    runs.append((wd, train.train(_shared_safe(), "rescue", wd)))
  (a, sa), (b, sb) = runs
  assert sa["used_head"] == sb["used_head"] and sa["used_head"]["switches"] >= 1
  assert sa["test"] == sb["test"] and sa["weights"] == sb["weights"]
  strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
  assert strip(writers.read_jsonl(os.path.join(a, "rescue_shared_safe", "metrics.jsonl"))) == (
      strip(writers.read_jsonl(os.path.join(b, "rescue_shared_safe", "metrics.jsonl"))))


def test_a_used_head_that_never_triggers_trains_as_the_raw_head(seed_dir, tmp_path):
  raw = train.train(tiny_config(), "full", copy_seed(seed_dir, str(tmp_path / "raw")))
  cfg = _shared_safe()
  cfg.train.used_head_trigger = -1e9
  never = train.train(cfg, "full", copy_seed(seed_dir, str(tmp_path / "never")))
  assert never["used_head"]["active_steps"] == 0 and never["used_head"]["switches"] == 0
  assert never["weights"]["used_head"] == 0.0
  for key in ("margin", "alignment", "rec", "kl"):
    np.testing.assert_allclose(never["test"][key], raw["test"][key], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(never["test"]["used_margin"], raw["test"]["margin"], atol=1e-6)


def test_a_shared_safe_protocol_writes_its_own_tables_with_raw_and_used_margins(noalign_dir,
                                                                                tmp_path):
  cfg = _shared_safe()
  cfg.protocol.variants = ("noalign", "rescue")
  root = tmp_path / "p"
  copy_seed(noalign_dir, str(root / "seed0"))
  rows = protocol.run_protocol(cfg, str(root), [0])
  assert (root / "protocol_shared_safe.json").exists() and not (root / "protocol.json").exists()
  by = {(r["variant"], r["split"]): r for r in rows}
  assert by[("noalign", "test")]["used_margin"] is None  # the control keeps the raw head
  assert by[("rescue", "test")]["phase"] == "rescue_shared_safe"
  assert by[("rescue", "test")]["used_margin"] is not None
  table = (root / "protocol_shared_safe.md").read_text()
  assert "Shared-safe used head" in table
  assert f"| rescue | test | {by[('rescue', 'test')]['margin']:+.3f} ± 0.000 | " in table
