"""Data parallelism over a device mesh: 4 forced CPU devices against 1 (issue 4, test a).

XLA's device count is fixed when JAX starts, so each configuration runs in its own
process with ``--xla_force_host_platform_device_count``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import jax, numpy as np
from certvae_jax import train
from tests.conftest import tiny_config
cfg = tiny_config()
cfg.train.batch_size = {batch}
runner = train.Runner(cfg, {workdir!r})
s = runner.run_mode("full")
assert runner.ctx.mesh.size == jax.device_count() == {devices}
with runner.dir.checkpoints("full") as ckpt:
  state, _ = runner.restore(ckpt, 10)
leaves = jax.tree.leaves(state.params)
np.savez({workdir!r} + "/params.npz", *[np.asarray(x) for x in leaves])
print(json.dumps({{"devices": jax.device_count(), "train": s["train"], "test": s["test"],
                  "sharded": str(state.params["encoder"]["mu"]["kernel"].sharding)}}))
"""


def run(tmp_path, devices, batch=128):
  workdir = str(tmp_path / f"d{devices}")
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  r = subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT, workdir=workdir,
                                                          devices=devices, batch=batch)],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  return r, workdir


def test_four_devices_match_one_device(tmp_path):
  r1, w1 = run(tmp_path, 1)
  r4, w4 = run(tmp_path, 4)
  assert r1.returncode == 0, r1.stderr[-3000:]
  assert r4.returncode == 0, r4.stderr[-3000:]
  one, four = json.loads(r1.stdout.splitlines()[-1]), json.loads(r4.stdout.splitlines()[-1])
  assert four["devices"] == 4 and "spec=P()" in four["sharded"]  # state replicated
  # Same math; only the order of float additions differs (all-reduce over 4 shards).
  for split in ("train", "test"):
    for key in ("teacher_mi", "alignment", "margin", "student_mi"):
      assert four[split][key] == pytest.approx(one[split][key], abs=1e-5), (split, key)
    assert four[split]["certified"] == one[split]["certified"]
  p1, p4 = np.load(w1 + "/params.npz"), np.load(w4 + "/params.npz")
  for k in p1.files:
    np.testing.assert_allclose(p4[k], p1[k], atol=1e-4, rtol=1e-4)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  r, _ = run(tmp_path, 4, batch=130)
  assert r.returncode != 0
  assert "config.train.batch_size: 130 must divide by the 4 devices" in r.stderr
