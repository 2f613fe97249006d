"""Guarded training (paper 1, appendices G and H): policies, barrier, student-first, resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import certificate, guard, objectives, train
from certvae_jax.experiments import protocol, report_page
from certvae_jax.guard import hook as guard_hook, objective as guard_objective
from certvae_jax.models.vae import build_model, init_params
from certvae_jax.training import hooks as hooks_lib, loop, phase_loop, step as step_lib, writers
from certvae_jax.training.checkpoint import Checkpointer
from tests import tensorboard_events
from tests.conftest import copy_seed, tiny_config


def _settings(**overrides):
  g = tiny_config().guard
  for key, value in overrides.items():
    g[key] = value
  return g


# -- the policies' rules ------------------------------------------------------------


def test_raise_rule_multiplies_caps_decays_and_holds():
  g = _settings(gamma=0.1, gamma_release=0.3, factor=2.0, max_lambda=15.0)
  assert guard.raise_step(0.05, 5.0, 5.0, g) == ("raise", 10.0)
  assert guard.raise_step(-1.0, 10.0, 5.0, g) == ("raise", 15.0)  # capped
  assert guard.raise_step(-1.0, 15.0, 5.0, g) == (None, 15.0)     # at the cap: no action
  assert guard.raise_step(0.2, 10.0, 5.0, g) == (None, 10.0)      # between: hold
  assert guard.raise_step(0.31, 15.0, 5.0, g) == ("decay", 7.5)
  assert guard.raise_step(0.31, 7.5, 5.0, g) == ("decay", 5.0)    # not below the base
  assert guard.raise_step(0.31, 5.0, 5.0, g) == (None, 5.0)


def test_barrier_equals_its_formula_and_its_gradient_equals_autodiff():
  kappa, floor = 0.3, 0.05
  g = jnp.asarray([-0.4, 0.0, 0.02, 0.05, 0.3, 2.0], jnp.float32)
  gg = np.asarray(g, np.float64)
  want = np.where(gg >= floor, -kappa * np.log(np.maximum(gg, floor)),
                  -kappa * (np.log(floor) + (gg - floor) / floor))
  np.testing.assert_allclose(guard_objective.barrier(g, kappa, floor), want, rtol=1e-6)
  grad = jax.vmap(jax.grad(lambda m: guard_objective.barrier(m, kappa, floor)))(g)
  np.testing.assert_allclose(grad, np.where(gg >= floor, -kappa / np.maximum(gg, floor),
                                            -kappa / floor), rtol=1e-6)
  assert np.all(np.isfinite(grad))


@pytest.fixture(scope="module")
def tiny_model():
  cfg = tiny_config()
  model = build_model(cfg.model, 64, 10, (8, 8))
  params = init_params(model, jax.random.PRNGKey(0), 64, 10)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(32, 64)).astype(np.float32)
  t = rng.dirichlet(np.ones(10) * 0.3, size=32).astype(np.float32)
  return cfg, model, params, {"x": jnp.asarray(x), "t": jnp.asarray(t)}


def test_guarded_loss_adds_the_barrier_and_its_gradient_is_kappa_over_margin(tiny_model):
  cfg, model, params, batch = tiny_model
  base = objectives.build("teacher_guided", model, cfg)
  kappa, tau = 0.2, 0.05
  floor = 0.05
  wrapped = guard_objective.guarded(base, tau=tau, kappa=kappa, floor=floor)
  w = {"alpha_kl": 4.0, "lambda_ts": 5.0, "lambda_bal": 1.0}
  rng = jax.random.PRNGKey(3)
  total, terms = base.loss(params, batch, rng, w)
  gtotal, gterms = wrapped.loss(params, batch, rng, dict(w, student_first=0.0))
  t = np.asarray(batch["t"], np.float64)
  tbar = t.mean(0)
  i_t = np.mean(np.sum(t * np.log(t / tbar), axis=1))
  margin = i_t - tau - float(terms["align"])
  assert float(gterms["batch_margin"]) == pytest.approx(margin, abs=1e-5)
  if margin >= floor:
    barrier = -kappa * np.log(margin)
  else:  # the tangent below the floor
    barrier = -kappa * (np.log(floor) + (margin - floor) / floor)
  assert float(gtotal) == pytest.approx(float(total) + barrier, rel=1e-5)
  # d(barrier)/d(params) = -kappa / G * d(G)/d(params) = kappa / G * d(align)/d(params).
  g_wrapped = jax.jit(jax.grad(
      lambda p: wrapped.loss(p, batch, rng, dict(w, student_first=0.0))[0]))(params)
  g_base = jax.jit(jax.grad(lambda p: base.loss(p, batch, rng, w)[0]))(params)
  g_align = jax.jit(jax.grad(lambda p: base.loss(p, batch, rng, w)[1]["align"]))(params)
  slope = kappa / max(margin, floor)
  for a, b, c in zip(jax.tree.leaves(g_wrapped), jax.tree.leaves(g_base),
                     jax.tree.leaves(g_align)):
    want = np.asarray(b, np.float64) + slope * np.asarray(c, np.float64)
    np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_student_first_step_trains_encoder_and_head_on_alignment_only(tiny_model):
  cfg, model, params, batch = tiny_model
  wrapped = guard_objective.guarded(objectives.build("teacher_guided", model, cfg), tau=0.05)
  w = {"alpha_kl": 4.0, "lambda_ts": 5.0, "lambda_bal": 1.0, "student_first": 1.0}
  loss, terms = wrapped.loss(params, batch, jax.random.PRNGKey(1), w)
  assert float(loss) == pytest.approx(5.0 * float(terms["align"]) + float(terms["bal"]),
                                      rel=1e-6)
  import optax  # pylint: disable=import-outside-toplevel
  tx = optax.adam(1e-2)
  state = step_lib.init_state(params, tx, jax.random.PRNGKey(2), w)
  train_step = step_lib.make_train_step(wrapped, tx)
  # Adam's first step moves every parameter with a non-zero gradient by about lr.
  before = jax.device_get(state.params)
  state, _ = train_step(state, batch)
  after = jax.device_get(state.params)
  for group in ("encoder", "head"):
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(after[group]),
                                              jax.tree.leaves(before[group])))
  for a, b in zip(jax.tree.leaves(after["decoder"]), jax.tree.leaves(before["decoder"])):
    np.testing.assert_array_equal(a, b)


def test_guard_rows_are_fixed_disjoint_and_cover_the_split():
  rows, held = guard.split_rows(1000, 0.1, seed=3)
  rows2, held2 = guard.split_rows(1000, 0.1, seed=3)
  np.testing.assert_array_equal(held, held2)
  assert len(held) == 100 and not set(rows) & set(held)
  assert sorted(set(rows) | set(held)) == list(range(1000))
  assert not np.array_equal(held, guard.split_rows(1000, 0.1, seed=4)[1])


def test_guard_margin_is_the_certificate_on_the_guard_rows(tiny_model):
  cfg, model, params, batch = tiny_model
  objective = objectives.build("teacher_guided", model, cfg)
  evaluate = objective.evaluate
  x, t = np.asarray(batch["x"]), np.asarray(batch["t"])
  margin = guard.margin_fn(objective.witness_logits, x, t, tau=0.05,
                           batch_size=12)  # 3 padded batches
  logits = evaluate(params, jnp.asarray(x), jnp.asarray(t), jax.random.PRNGKey(0))[
      "witness_logits"]
  s = np.asarray(jax.nn.softmax(logits), np.float64)
  tt = t.astype(np.float64)
  ref = (np.mean(np.sum(tt * np.log(tt / tt.mean(0)), 1)) - 0.05
         - np.mean(np.sum(tt * np.log(tt / s), 1)))
  assert margin(params) == pytest.approx(ref, abs=1e-5)
  assert margin(params) == pytest.approx(float(certificate.margin(t, s, 0.05)), abs=1e-5)


@pytest.mark.parametrize("field, value, match", [
    ("policy", "sometimes", "config.guard.policy"),
    ("fraction", 1.0, "config.guard.fraction"),
    ("factor", 1.0, "config.guard.factor"),
    ("gamma_release", 0.0, "config.guard.gamma_release"),
    ("every", 0, "config.guard.every"),
    ("student_first_steps", -1, "config.guard.student_first_steps"),
])
def test_bad_guard_settings_are_value_errors(field, value, match):
  cfg = tiny_config()
  cfg.guard[field] = value
  with pytest.raises(ValueError, match=match):
    train.make_context(cfg)


def test_a_guard_set_that_leaves_too_few_training_rows_is_a_value_error(seed_dir, tmp_path):
  cfg = tiny_config(batch_size=1400)  # digits' training split has 1,438 rows
  cfg.guard.policy = "raise"
  with pytest.raises(ValueError, match="config.guard.fraction: holding out 144 of 1438"):
    train.train(cfg, "full", copy_seed(seed_dir, str(tmp_path / "w")))


def test_guard_off_leaves_runs_unguarded_and_controls_are_never_guarded():
  cfg = tiny_config()
  assert phase_loop.phase_name(cfg, "full") == "full"
  cfg.guard.policy = "raise"
  assert phase_loop.phase_name(cfg, "full") == "full_guard_raise"
  assert phase_loop.phase_name(cfg, "noalign") == "noalign"  # lambda_TS = 0: a control
  assert phase_loop.phase_name(cfg, "vanilla_vae") == "vanilla_vae"
  cfg.guard.student_first_steps = 20
  assert phase_loop.phase_name(cfg, "rescue", "fixed") == "rescue_guard_raise_sf20_fixed"
  assert phase_loop.phase_name(cfg, "full") == "full_guard_raise"  # sf: rescue only


# -- rollback on a scripted guard -----------------------------------------------------


class _Scripted:
  """A guard margin read from a script, one value per evaluation."""

  def __init__(self, values):
    self.values, self.calls = list(values), []

  def __call__(self, params):
    self.calls.append(float(params["t"]))
    return self.values.pop(0)


def _toy_loop(tmp_path, hook, total=20, run_writers=None, log_every=None):
  """A loop over a one-number state, saving every 5 steps. Its step's ``loss`` is the
  current ``lambda_ts`` (written every ``log_every`` steps if given), so rows written
  before and after a change of weight differ. ``run_writers`` replace the in-memory sink."""
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  weights = {"lambda_ts": 5.0, "student_first": 0.0}
  state = step_lib.TrainState(step=jnp.asarray(0, jnp.int32), params={"t": jnp.float32(0)},
                              opt_state=(), rng=jnp.zeros(2, jnp.uint32),
                              skipped=jnp.asarray(0, jnp.int32),
                              weights=step_lib.as_weights(weights))

  def advance(st, step, n=1):
    return (st.replace(step=st.step + n, params={"t": st.params["t"] + n}),
            {"loss": st.weights["lambda_ts"]})

  rows = []

  class Sink:
    def write_scalars(self, step, scalars):
      rows.append({"step": step, **scalars})

    def write_event(self, step, event):
      rows.append({"step": step, **event})

    def flush(self):
      """Nothing buffered."""

    def close(self):
      """Nothing open."""

  logged = [] if log_every is None else [hooks_lib.StepMetrics(log_every)]
  lp = loop.Loop(state, advance, total, [*logged, hook, _Every(5, loop.Loop.save)],
                 save=lambda s, st, extra: ckpt.save(s, st, dict(extra)),
                 restore=lambda s: ckpt.restore(jax.eval_shape(lambda: state), s),
                 put_weights=step_lib.as_weights,
                 writers=[Sink()] if run_writers is None else run_writers, checkpointer=ckpt)
  return lp, ckpt, rows


class _Every(loop.Hook):
  def __init__(self, every, action):
    self.every, self.action = every, action

  def wants_sync(self, step, last):
    return step % self.every == 0 or last

  def on_sync(self, lp, step, rows):
    self.action(lp)


def test_rollback_restores_the_last_certified_checkpoint_with_the_raised_weight(tmp_path):
  g = _settings(policy="rollback", every=5, gamma=0.1, gamma_release=0.3, factor=2.0,
                max_lambda=80.0, max_rollbacks=1)
  # Evaluations at steps 5, 10, 15 | (rolled back to 10) 15, 20.
  margin = _Scripted([0.5, 0.05, -0.3, 0.4, -0.5])
  hook = guard.GuardHook(g, margin, {"lambda_ts": 5.0}, checkpoint_every=5)
  lp, ckpt, rows = _toy_loop(tmp_path, hook)
  state = lp.run()
  # 5: hold; 10: raise 5 -> 10 (certified checkpoint); 15: G < 0 -> back to step 10
  # with 10 -> 20; 15: decay to 10; 20: G < 0, the one rollback spent -> raise to 20.
  assert margin.calls == [5, 10, 15, 15, 20]
  events = [r for r in rows if r.get("event") == "guard"]
  assert [(e["step"], e["action"], e["old_lambda_ts"], e["new_lambda_ts"]) for e in events] == [
      (10, "raise", 5.0, 10.0), (10, "rollback", 10.0, 20.0), (15, "decay", 20.0, 10.0),
      (20, "raise", 10.0, 20.0)]
  assert events[1]["fired_at"] == 15 and events[1]["rollback_to"] == 10
  assert int(state.step) == 20 and float(state.weights["lambda_ts"]) == 20.0
  assert hook.summary()["rollbacks"] == 1 and hook.summary()["interventions"] == 4
  assert hook.last_good == 15
  ckpt.close()


def test_a_rollback_drops_the_abandoned_rows_from_metrics_jsonl_and_tensorboard(tmp_path):
  """The scripted rollback above (15 -> 10) with the run's writers: both keep the rows up
  to step 10 and then the replayed steps, once each; TensorBoard shows what the log says."""
  g = _settings(policy="rollback", every=5, gamma=0.1, gamma_release=0.3, factor=2.0,
                max_lambda=80.0, max_rollbacks=1)
  hook = guard.GuardHook(g, _Scripted([0.5, 0.05, -0.3, 0.4, -0.5]), {"lambda_ts": 5.0},
                         checkpoint_every=5)
  jsonl = writers.JsonLinesWriter(str(tmp_path / "metrics.jsonl"))
  board = writers.TensorBoardWriter(str(tmp_path / "tb"))
  lp, ckpt, _ = _toy_loop(tmp_path, hook, run_writers=[jsonl, board], log_every=1)
  lp.run()
  board.close()
  ckpt.close()
  rows = writers.read_jsonl(jsonl.path)
  losses = [(r["step"], r["train_step/loss"]) for r in rows if "train_step/loss" in r]
  # lambda_ts 5 up to the raise at 10, then 20 after the rollback, 10 after the decay at 15
  # (11-15 ran first with 10: those rows are gone).
  assert losses == ([(s, 5.0) for s in range(1, 11)] + [(s, 20.0) for s in range(11, 16)]
                    + [(s, 10.0) for s in range(16, 21)])
  shown = tensorboard_events.scalars(str(tmp_path / "tb"))
  assert shown["train_step/loss"] == losses
  guard_rows = [(r["step"], r["new_lambda_ts"]) for r in rows if r.get("event") == "guard"]
  assert shown["guard/new_lambda_ts"] == guard_rows == [(10, 10.0), (10, 20.0), (15, 10.0),
                                                        (20, 20.0)]


def test_rollback_keeps_the_certified_checkpoint_past_retention(tmp_path):
  g = _settings(policy="rollback", every=5, gamma=0.0, gamma_release=0.3, max_rollbacks=1)
  # Certified at 5; uncertified (G = 0 exactly: neither raised nor rolled back)
  # checkpoints at 10, 15, 20; retention keeps the latest two and the pinned 5. At 25
  # the guard rolls back to exactly step 5, and the abandoned 15 and 20 are deleted.
  margin = _Scripted([0.5, 0.0, 0.0, 0.0, -0.2] + [0.5] * 5)
  hook = guard.GuardHook(g, margin, {"lambda_ts": 5.0}, checkpoint_every=5)
  lp, ckpt, rows = _toy_loop(tmp_path, hook, total=30)
  saved = []
  original_save = lp._save  # pylint: disable=protected-access
  lp._save = lambda s, st, extra: (saved.append((s, sorted(ckpt.all_steps()))),  # pylint: disable=protected-access
                                   original_save(s, st, extra))
  lp.run()
  rollback = [r for r in rows if r.get("action") == "rollback"]
  assert [(r["step"], r["fired_at"], r["rollback_to"]) for r in rollback] == [(5, 25, 5)]
  assert margin.calls[5] == 10.0  # training resumed from t = 5
  assert saved[:5] == [(5, []), (10, [5]), (15, [5, 10]), (20, [5, 10, 15]), (10, [5])]
  ckpt.close()


# -- whole runs -----------------------------------------------------------------------


def _pseudo_margin(witness_logits, x, t, tau, batch_size, sharding=None):
  """A guard margin that is a fixed pseudo-random function of the parameters: it crosses
  zero often, so a short run exercises raises, decays and rollbacks deterministically."""
  del witness_logits, x, t, tau, batch_size, sharding

  def margin(params):
    total = sum(float(np.sum(np.abs(np.asarray(leaf, np.float64))))
                for leaf in jax.tree.leaves(params))
    return float(np.sin(1e4 * total))
  return margin


class _CrashOnce(loop.Hook):
  def __init__(self, at):
    self.at = at

  def on_sync(self, lp, step, rows):
    if step >= self.at:
      raise KeyboardInterrupt(f"simulated kill at step {step}")


def _guarded_config():
  cfg = tiny_config()
  cfg.train.checkpoint_every = 5
  cfg.guard.policy = "rollback"
  cfg.guard.every = 5
  cfg.guard.student_first = True
  cfg.guard.max_rollbacks = 2
  return cfg


@pytest.mark.parametrize("kill_at", [10, 25])
def test_a_killed_guarded_run_resumes_bit_for_bit(seed_dir, tmp_path, monkeypatch, kill_at):
  """Killed at 10: after two rollbacks to step 5, before any later checkpoint (the resume
  replays them from checkpoint 5); at 25: after a raise, before its checkpoint."""
  monkeypatch.setattr(guard_hook, "margin_fn", _pseudo_margin)
  cfg = _guarded_config()
  straight = copy_seed(seed_dir, str(tmp_path / "a"))
  s = train.train(cfg, "full", straight)
  assert s["guard"]["rollbacks"] >= 1 and s["guard"]["raises"] >= 1  # the harness works
  assert s["guard_interventions"] == s["guard"]["interventions"]
  killed = copy_seed(seed_dir, str(tmp_path / "b"))
  with pytest.raises(KeyboardInterrupt):
    train.train(cfg, "full", killed, hooks=[_CrashOnce(kill_at)])
  s2 = train.train(cfg, "full", killed)
  assert s2["guard"] == s["guard"] and s2["train"] == s["train"] and s2["test"] == s["test"]
  assert s2["weights"] == s["weights"]
  phase = "full_guard_rollback"
  rows = [writers.read_jsonl(os.path.join(wd, phase, "metrics.jsonl"))
          for wd in (straight, killed)]
  strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
  assert strip(rows[0]) == strip(rows[1])
  events = [r for r in rows[0] if r.get("event") == "guard"]
  assert len(events) == s["guard_interventions"]
  for e in events:
    assert {"step", "action", "guard_margin", "old_lambda_ts", "new_lambda_ts"} <= set(e)
  states = []
  for wd in (straight, killed):
    with Checkpointer(os.path.join(wd, phase, "checkpoints")) as ckpt:
      states.append(train.Runner(cfg, wd).restore(ckpt, 10, s["step"])[0])
  for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_guarded_protocol_writes_its_own_tables_and_keeps_the_control_unguarded(
    seed_dir, tmp_path):
  cfg = tiny_config()
  cfg.protocol.variants = ("full", "noalign")
  cfg.guard.policy = "raise"
  root = tmp_path / "p"
  copy_seed(seed_dir, str(root / "seed0"))
  rows = protocol.run_protocol(cfg, str(root), [0])
  assert sorted({(r["variant"], r["phase"]) for r in rows}) == [
      ("full", "full_guard_raise"), ("noalign", "noalign")]
  assert all((r["guard_interventions"] is None) == (r["variant"] == "noalign") for r in rows)
  assert (root / "protocol_guard_raise.json").exists() and not (root / "protocol.json").exists()
  # The report reads each mode's own directory: the guarded full run is not its "full".
  cfg.guard.policy = "off"
  train.train(cfg, "full", str(root / "seed0"))
  phases = report_page.collect(str(root))["seeds"][0]["summaries"]
  assert {v: s["phase"] for v, s in phases.items()} == {"full": "full", "noalign": "noalign"}


def test_student_first_rescue_freezes_the_decoder_then_trains_everything(seed_dir, tmp_path):
  cfg = tiny_config()
  wd = copy_seed(seed_dir, str(tmp_path / "r"))
  train.train(cfg, "noalign", wd)
  cfg.guard.student_first_steps = 20

  class Decoder(loop.Hook):
    seen = {}

    def wants_sync(self, step, last):
      return step % 10 == 0

    def on_sync(self, lp, step, rows):
      if lp.name.startswith("rescue"):
        self.seen[step] = jax.device_get(lp.state.params["decoder"])

  s = train.train(cfg, "rescue", wd, hooks=[Decoder()])
  seen = Decoder.seen
  assert s["weights"]["student_first"] == 0.0
  for step in (50, 60):  # the rescue starts at 40; student-first through step 60
    for a, b in zip(jax.tree.leaves(seen[step]), jax.tree.leaves(seen[50])):
      np.testing.assert_array_equal(a, b)
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(seen[80]),
                                            jax.tree.leaves(seen[60])))
  rows = writers.read_jsonl(os.path.join(wd, "rescue_sf20", "metrics.jsonl"))
  assert [r["step"] for r in rows if r.get("action") == "student_first_end"] == [60]
  by_step = {r["step"]: r for r in rows if "train_step/weight/student_first" in r}
  assert by_step[60]["train_step/weight/student_first"] == 1.0
  assert by_step[70]["train_step/weight/student_first"] == 0.0
  diag = s["rescue_diagnostics"]
  assert diag["align_grad_norm"] > 0 and -1 <= diag["response_correlation"] <= 1
