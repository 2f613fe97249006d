"""Several steps per compiled call give exactly the run of one step per call."""

import os

import jax
import numpy as np
import pytest

from certvae_jax import train
from certvae_jax.training import loop, writers
from certvae_jax.training.checkpoint import Checkpointer
from tests.conftest import tiny_config


def _run(workdir, mode="full", target="live", hooks=(), on_device=True, **train_overrides):
  cfg = tiny_config(**train_overrides)
  cfg.train.log_every = 10
  cfg.train.checkpoint_every = 10
  cfg.data.on_device = on_device
  return cfg, train.train(cfg, mode, str(workdir), target=target, hooks=hooks)


def _state(cfg, workdir, phase):
  with Checkpointer(os.path.join(str(workdir), phase, "checkpoints")) as ckpt:
    return train.Runner(cfg, str(workdir)).restore(ckpt, 10)[0]


def _assert_same(cfg, a, b, phase):
  for x, y in zip(jax.tree.leaves(_state(cfg, a, phase)), jax.tree.leaves(_state(cfg, b, phase))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def one_per_call(tmp_path_factory):
  """Reference runs at one step per call: full (live and fixed) and rescue."""
  wd = tmp_path_factory.mktemp("one")
  for target in ("live", "fixed"):
    _run(wd, "full", target)
  _run(wd, "noalign")
  _run(wd, "rescue")
  return wd


@pytest.mark.parametrize("n,target,unroll", [(3, "live", False), (7, "fixed", False),
                                             (4, "live", True)])
def test_chunks_on_device_equal_one_step_per_call(one_per_call, tmp_path, n, target, unroll):
  cfg, s = _run(tmp_path, "full", target, steps_per_call=n, unroll_steps=unroll)
  phase = "full" if target == "live" else "full_fixed"
  reference = train.Runner(cfg, str(one_per_call)).dir.read_summary(phase)
  assert s["train"] == reference["train"] and s["test"] == reference["test"]
  _assert_same(cfg, one_per_call, tmp_path, "warmup")
  _assert_same(cfg, one_per_call, tmp_path, phase)
  rows = [r["step"] for r in writers.read_jsonl(
      os.path.join(str(tmp_path), phase, "metrics.jsonl"))]
  assert rows == [10, 20, 30, 40]  # hooks see the same steps


def test_host_batches_and_rescue_with_chunks(one_per_call, tmp_path):
  cfg, _ = _run(tmp_path, "noalign", steps_per_call=6, on_device=False)
  cfg, s = _run(tmp_path, "rescue", steps_per_call=6, on_device=False)
  assert s["step"] == 80
  _assert_same(cfg, one_per_call, tmp_path, "rescue")


def test_non_finite_step_is_named_exactly_inside_a_chunk(tmp_path):
  messages = []
  for n in (1, 7):
    with pytest.raises(train.TrainingDiverged) as e:
      _run(tmp_path / f"n{n}", "warmup", steps_per_call=n, learning_rate=1e30)
    messages.append(str(e.value).split(" (")[0])
  assert messages[0] == messages[1] and "at step" in messages[0]


def test_a_killed_chunked_run_resumes_exactly(one_per_call, tmp_path):
  class Crash(loop.Hook):
    def on_sync(self, lp, step, rows):
      if lp.name == "full" and step == 30:
        raise KeyboardInterrupt("simulated kill before step 30's checkpoint")

  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, "full", steps_per_call=3, hooks=[Crash()])
  cfg, s = _run(tmp_path, "full", steps_per_call=3)
  reference = train.Runner(cfg, str(one_per_call)).dir.read_summary("full")
  assert s["train"] == reference["train"]
  _assert_same(cfg, one_per_call, tmp_path, "full")
