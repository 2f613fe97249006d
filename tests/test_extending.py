"""Extension points used from a test file alone: an objective, a hook, a writer.

Nothing here edits the step, the loop or the run: each toy is registered or passed in.
"""

import json
import os

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import objectives, train
from certvae_jax.models.vae import TeacherGuidedVAE
from certvae_jax.teachers import kinds
from certvae_jax.training import extensions, hooks, loop, modes, writers
from certvae_jax.training.checkpoint import Checkpointer
from tests.conftest import copy_seed, tiny_config
from tests.launcher import launch


@pytest.fixture
def registries():
  """Leaves the registries as the test found them."""
  # pylint: disable=protected-access
  live = (objectives.base._REGISTRY.entries, modes._MODES.entries, writers._REGISTRY.entries,
          hooks._REGISTRY.entries, extensions._REGISTRY.entries, kinds._REGISTRY.entries)
  saved = [dict(r) for r in live]
  yield
  for registry, old in zip(live, saved):
    registry.clear()
    registry.update(old)


def test_a_toy_objective_and_mode_train_through_the_registries(seed_dir, tmp_path, registries):
  @objectives.register("elbo_plus_code_l2")
  def build(model, config):
    base = objectives.build("teacher_guided", model, config)

    def loss(params, batch, rng, weights):
      total, terms = base.loss(params, batch, rng, weights)
      mu, _ = model.apply({"params": params}, batch["x"], method=TeacherGuidedVAE.encode)
      l2 = jnp.mean(jnp.sum(jnp.square(mu), axis=-1))
      return total + weights["gamma"] * l2, dict(terms, code_l2=l2)

    return objectives.Objective(loss=loss, weight_names=base.weight_names + ("gamma",),
                                evaluate=base.evaluate)

  modes.register(modes.Mode(
      "l2", "elbo_plus_code_l2",
      lambda c: {"alpha_kl": 1.0, "lambda_ts": 5.0, "lambda_bal": 1.0, "gamma": 0.5},
      tag=lambda c: "g0.5"))
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  s = train.train(tiny_config(), "l2", wd)
  assert s["mode"] == "l2" and s["step"] == 40 and s["weights"]["gamma"] == 0.5
  rows = writers.read_jsonl(os.path.join(wd, "l2_g0.5", "metrics.jsonl"))
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  assert all(np.isfinite(r["train_step/code_l2"]) for r in rows)
  assert rows[-1]["test/margin"] == s["test"]["margin"]


class _SetLambdaAt(loop.Hook):
  """At ``step`` of phase ``full``: lambda_TS <- ``value``."""

  def __init__(self, step, value):
    self.step, self.value = step, value

  def on_sync(self, lp, step, rows):
    if lp.name == "full" and step == self.step:
      return loop.SetWeights({"lambda_ts": self.value})
    return None


class _Crash(loop.Hook):
  def on_sync(self, lp, step, rows):
    if step == 30:
      raise KeyboardInterrupt("simulated kill after step 30's metrics, before its checkpoint")


def _final_state(wd):
  runner = train.Runner(tiny_config(), wd)
  with Checkpointer(os.path.join(wd, "full", "checkpoints")) as ckpt:
    return runner.restore(ckpt, 10)


class _Rewinds:
  """A metric writer with ``rewind``: it records its calls, ``("row", step)`` and
  ``("rewind", step)``."""

  def __init__(self):
    self.calls = []

  def write_scalars(self, step, scalars):
    self.calls.append(("row", step))

  def rewind(self, step):
    self.calls.append(("rewind", step))

  def flush(self):
    """Nothing is buffered."""

  def close(self):
    """Nothing stays open."""


def test_a_hook_changes_a_weight_mid_run_and_a_killed_run_resumes_exactly(
    seed_dir, tmp_path):
  cfg = tiny_config()
  cfg.train.checkpoint_every = 10
  straight = copy_seed(seed_dir, str(tmp_path / "a"))
  s = train.train(cfg, "full", straight, hooks=[_SetLambdaAt(20, 0.5)])
  assert s["weights"]["lambda_ts"] == 0.5
  state, meta = _final_state(straight)
  assert float(state.weights["lambda_ts"]) == 0.5 and meta["lambda_ts"] == 5.0
  rows = {r["step"]: r for r in writers.read_jsonl(os.path.join(straight, "full",
                                                                "metrics.jsonl"))}
  assert rows[20]["train_step/weight/lambda_ts"] == 5.0  # step 20 ran before the change
  assert rows[30]["train_step/weight/lambda_ts"] == 0.5

  killed = copy_seed(seed_dir, str(tmp_path / "b"))
  with pytest.raises(KeyboardInterrupt):
    train.train(cfg, "full", killed, hooks=[_SetLambdaAt(20, 0.5), _Crash()])
  # Resumed from step 20 without the hook: the new weight comes from the checkpoint. A
  # writer with rewind hears first that the killed run's rows past step 20 are abandoned.
  seen = _Rewinds()
  s2 = train.train(cfg, "full", killed, writers=[seen])
  assert s2["weights"]["lambda_ts"] == 0.5 and s2["train"] == s["train"]
  assert seen.calls[0] == ("rewind", 20) and seen.calls[1][1] > 20
  resumed, _ = _final_state(killed)
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_hook_can_stop_and_restore(seed_dir, tmp_path):
  class StopAt30(loop.Hook):
    def on_sync(self, lp, step, rows):
      return loop.Stop("enough") if lp.name == "full" and step == 30 else None

  wd = copy_seed(seed_dir, str(tmp_path / "s"))
  s = train.train(tiny_config(), "full", wd, hooks=[StopAt30()])
  assert s["step"] == 30 and "probe_accuracy" in s["test"]

  class RestoreOnce(loop.Hook):
    def __init__(self):
      self.done = False

    def on_eval(self, lp, step, results):
      if lp.name == "full" and step == 40 and not self.done:
        self.done = True
        return loop.Restore(20)
      return None

  wd2 = copy_seed(seed_dir, str(tmp_path / "r"))
  seen = _Rewinds()
  again = train.train(tiny_config(), "full", wd2, hooks=[RestoreOnce()], writers=[seen])
  # Told once, at step 40's evaluation (before that step's row), then steps 21-40 again.
  rewound = seen.calls.index(("rewind", 20))
  assert seen.calls[:rewound] == [("row", 10), ("row", 20), ("row", 30)]
  assert seen.calls[rewound + 1:] == [("row", 30), ("row", 40)]
  plain = train.train(tiny_config(), "full", copy_seed(seed_dir, str(tmp_path / "p")))
  assert again["train"] == plain["train"]  # steps 21-40 redone identically
  steps = [r["step"] for r in writers.read_jsonl(os.path.join(wd2, "full", "metrics.jsonl"))]
  assert steps == sorted(set(steps))


class _Collect:
  """A metric writer that keeps what it is given."""

  def __init__(self, sink):
    self.sink = sink

  def write_scalars(self, step, scalars):
    self.sink.append({"step": step, **scalars})

  def flush(self):
    """Nothing is buffered: each row is kept (or written) when given."""

  def close(self):
    """Nothing stays open."""


def test_a_registered_writer_receives_the_same_scalars_as_metrics_jsonl(
    seed_dir, tmp_path, registries):
  received = {}
  writers.register("collect", lambda phase_dir: _Collect(
      received.setdefault(os.path.basename(phase_dir), [])))
  cfg = tiny_config()
  cfg.train.writers = "jsonl,collect"
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  train.train(cfg, "full", wd)
  on_disk = writers.read_jsonl(os.path.join(wd, "full", "metrics.jsonl"))
  assert received["full"] == on_disk and len(on_disk) == 4
  assert {"train_step/loss", "train/margin", "test/certified"} <= set(on_disk[-1])


def test_unknown_writer_or_hook_name_is_a_value_error():
  cfg = tiny_config()
  cfg.train.writers = "jsonl,tensorbored"
  with pytest.raises(ValueError, match="config.train.writers: unknown writer 'tensorbored'"):
    train.make_context(cfg)
  cfg = tiny_config()
  cfg.train.hooks = "guard"
  with pytest.raises(ValueError, match="config.train.hooks: unknown hook 'guard'"):
    train.make_context(cfg)


def test_every_mode_of_a_run_shares_one_compiled_train_step(tmp_path, registries):
  """The weights are in the state, so warm-up, full, noalign, rescue and vae trace the
  teacher-guided loss once; only the feeding (given targets vs the live teacher) differs."""
  traces = []
  original = objectives.base._REGISTRY.entries["teacher_guided"]  # pylint: disable=protected-access

  @objectives.register("teacher_guided")
  def counted(model, config):
    obj = original(model, config)

    def loss(*args):
      traces.append(1)  # Python runs only while JAX traces
      return obj.loss(*args)
    return obj._replace(loss=loss)

  runner = train.Runner(tiny_config(), str(tmp_path))
  for mode in ("warmup", "full", "noalign", "rescue", "vae"):
    runner.run_mode(mode)
  assert len(traces) == 1
  cache = runner.engine._cache  # pylint: disable=protected-access
  fused = [key for key in cache if key[0] == "fused"]
  assert len(fused) == 2  # one with given targets (warm-up), one with the live teacher


def _readme_extending_blocks():
  with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "docs", "extending.md")) as fh:
    section = fh.read()
  return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_readme_extending_blocks_run(seed_dir, tmp_path, registries, capsys):
  setup, objective, hook, writer = _readme_extending_blocks()
  ns: dict = {}
  exec(setup, ns)  # pylint: disable=exec-used  (the shipped smoke config, by name)
  assert ns["config"].train.steps == 60 and ns["workdir"]

  ns = {"config": tiny_config(), "workdir": copy_seed(seed_dir, str(tmp_path / "o"))}
  exec(objective, ns)  # pylint: disable=exec-used
  assert ns["summary"]["mode"] == "full_l2" and ns["summary"]["weights"]["gamma"] == 0.1
  rows = writers.read_jsonl(os.path.join(ns["workdir"], "full_l2", "metrics.jsonl"))
  assert "train_step/l2" in rows[0]

  ns = {"config": tiny_config(), "workdir": copy_seed(seed_dir, str(tmp_path / "h"))}
  exec(hook, ns)  # pylint: disable=exec-used
  rows = writers.read_jsonl(os.path.join(ns["workdir"], "full", "metrics.jsonl"))
  low = sum(1 for r in rows if "train/margin" in r and r["train/margin"] < 0.5)
  assert ns["summary"]["weights"]["lambda_ts"] == 5.0 * 2**low

  ns = {"config": tiny_config(), "workdir": copy_seed(seed_dir, str(tmp_path / "w"))}
  exec(writer, ns)  # pylint: disable=exec-used
  printed = [l for l in capsys.readouterr().out.splitlines() if "G_tau(test)" in l]
  assert printed[-1] == f"step 40: G_tau(test) = {ns['summary']['test']['margin']:+.3f}"


class TinyEncoder(flax.linen.Module):
  """A user's encoder, loaded by import path: ``x -> (mu, logvar)``."""
  latent_dim: int

  @flax.linen.compact
  def __call__(self, x):
    h = flax.linen.tanh(flax.linen.Dense(32)(x))
    return flax.linen.Dense(self.latent_dim)(h), flax.linen.Dense(self.latent_dim)(h)


class TinyDecoder(flax.linen.Module):
  out_dim: int

  @flax.linen.compact
  def __call__(self, z):
    return flax.linen.Dense(self.out_dim)(flax.linen.tanh(flax.linen.Dense(32)(z)))


def tiny_head(model_config, dims):
  """A factory: the registry passes the model config and the sizes."""
  del model_config
  return flax.linen.Dense(dims.num_classes)


def test_user_modules_plug_in_by_import_path(tmp_path):
  cfg = tiny_config()
  cfg.model.encoder = "tests.test_extending:TinyEncoder"
  cfg.model.decoder = "tests.test_extending:TinyDecoder"
  cfg.model.head = "tests.test_extending:tiny_head"
  s = train.train(cfg, "full", str(tmp_path))
  assert s["step"] == 40 and np.isfinite(s["test"]["margin"])
  state, _ = train.Runner(cfg, str(tmp_path)).restore(
      Checkpointer(os.path.join(str(tmp_path), "full", "checkpoints")), 10)
  assert state.params["encoder"]["Dense_0"]["kernel"].shape == (64, 32)
  assert state.params["head"]["kernel"].shape == (16, 10)


@pytest.mark.parametrize("field,value,match", [
    ("encoder", "tests.test_extending:Nope", "model.encoder: 'tests.test_extending' has no 'Nope'"),
    ("head", "no_such_pkg.mod:Head", "model.head: cannot import 'no_such_pkg.mod'"),
    ("encoder", "tests.test_extending:TinyEncoder", "model.decoder: the encoder"),
])
def test_bad_module_paths_are_value_errors(field, value, match):
  cfg = tiny_config()
  cfg.model[field] = value
  with pytest.raises(ValueError, match=match):
    train.make_context(cfg)


class FileWriter:
  """A writer loaded by import path: built with the phase directory."""

  def __init__(self, phase_dir):
    self.path = os.path.join(phase_dir, "collected.jsonl")

  def write_scalars(self, step, scalars):
    with open(self.path, "a") as fh:
      fh.write(json.dumps({"step": step, **scalars}) + "\n")

  def flush(self):
    """Nothing is buffered: each row is kept (or written) when given."""

  def close(self):
    """Nothing stays open."""


def stop_full_at_30(config):
  """A hook factory loaded by import path: built with the config."""
  del config

  class StopAt30(loop.Hook):
    def on_sync(self, lp, step, rows):
      return loop.Stop("at 30") if lp.name == "full" and step == 30 else None
  return StopAt30()


def test_hooks_and_writers_by_import_path_from_the_command_line(tmp_path):
  r = launch("train.py", "--mode=full", "--config=digits:smoke",
             "--config.train.progress=False", f"--workdir={tmp_path}",
             "--config.train.writers=jsonl,tests.test_extending:FileWriter",
             "--config.train.hooks=tests.test_extending:stop_full_at_30", code=None)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "full (live) step 30" in r.stdout
  collected = writers.read_jsonl(str(tmp_path / "full" / "collected.jsonl"))
  assert collected == writers.read_jsonl(str(tmp_path / "full" / "metrics.jsonl"))
  assert collected[-1]["step"] == 30


class _CountSteps(extensions.PhasePlan):
  """A user's phase extension: a directory tag, a checkpointed setting and a summary entry."""
  tag = "counted"

  def __init__(self):
    self.hook = None

  def meta(self):
    return {"counting": True}

  def hooks(self, inputs):
    class Count(loop.Hook):
      seen = 0

      def on_sync(self, lp, step, rows):
        Count.seen += len(rows)
    self.hook = Count
    return None, [Count()]

  def summary(self):
    return {"counted_rows": self.hook.seen}


def test_a_phase_extension_plugs_into_every_phase_it_chooses(seed_dir, tmp_path, registries):
  """A user's extension, registered by name, tags the phase directory, saves its setting
  with the checkpoints and adds to the summary, with no change to the run."""
  extensions.register("count", extensions.PhaseExtension(
      lambda config, mode: _CountSteps() if mode.name == "full" else None))
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  summary = train.train(tiny_config(), "full", wd)
  assert summary["counted_rows"] > 0
  assert os.path.isfile(os.path.join(wd, "full_counted", "summary.json"))
  with Checkpointer(os.path.join(wd, "full_counted", "checkpoints")) as ckpt:
    assert ckpt.read_meta()["counting"] is True
  assert not os.path.exists(os.path.join(wd, "noalign_counted"))
  assert train.train(tiny_config(), "noalign", wd)["step"] == 40  # other phases: untouched
  assert os.path.isdir(os.path.join(wd, "noalign"))


def test_a_teacher_kind_plugs_in_by_name(tmp_path, registries):
  """A user's teacher given by its rows (here one-hot labels), registered as a kind and
  named in the config as any built-in kind is."""
  def one_hot(t, data, arg):
    k = int(data.num_classes)
    return kinds.RowsMade(np.eye(k)[data.y_train] * 0.9 + 0.01,
                          np.eye(k)[data.y_test] * 0.9 + 0.01, {"note": arg}, "one-hot")
  kinds.register("onehot", kinds.TeacherKind(
      "onehot", lambda t, data, arg: int(data.num_classes), one_hot, argument="a note"))
  cfg = tiny_config()
  cfg.teacher.kind = "onehot:mine"
  wd = str(tmp_path / "w")
  runner = train.Runner(cfg, wd)
  teacher = runner.ensure_teacher()
  assert teacher.kind == "onehot" and teacher.function is None and teacher.info["note"] == "mine"
  assert teacher.num_classes == 10
  np.testing.assert_allclose(teacher.cached_rows("test").sum(axis=1), 1.0, atol=1e-6)
  kinds.register("broken", kinds.TeacherKind(
      "broken", lambda t, data, arg: int(data.num_classes),
      lambda t, data, arg: kinds.RowsMade(np.eye(10)[data.y_train], np.eye(10)[data.y_test] * 2,
                                          {}, "broken")))
  cfg.teacher.kind = "broken"
  with pytest.raises(ValueError, match="teacher kind 'broken': test rows"):
    train.Runner(cfg, str(tmp_path / "b")).ensure_teacher()
  with pytest.raises(ValueError, match="config.teacher.kind: 'onehot' needs a note"):
    cfg.teacher.kind = "onehot"
    train.Runner(cfg, str(tmp_path / "v"))
