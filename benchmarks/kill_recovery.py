"""Kill -9 a training run at random moments, resume it, and check nothing was lost.

Runs ``launch/train.py --mode=full`` on the smoke config (checkpoint every 2 steps, so
many kills land inside a save), killing it ``--trials`` times at uniformly random
delays, then lets it finish and compares the final parameters (bit for bit) and the
summary with an uninterrupted run. For each kill it records where the run was: the
phases present, the latest complete checkpoint, and whether an unfinished (temporary)
checkpoint directory was left behind, i.e. the kill hit a save.

    python benchmarks/kill_recovery.py [--trials 10] [--seed 0]
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FLAGS = ["--config=" + os.path.join(ROOT, "configs", "digits.py") + ":smoke",
         "--config.train.progress=False", "--config.warmup.steps=40",
         "--config.train.steps=40", "--config.train.checkpoint_every=2",
         "--config.eval.every=20"]


def run(workdir: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                           "--mode=full", f"--workdir={workdir}", *FLAGS],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def where(workdir: str) -> str:
  parts = []
  for phase in ("warmup", "full"):
    ck = os.path.join(workdir, phase, "checkpoints")
    if not os.path.isdir(ck):
      continue
    steps = sorted(int(d) for d in os.listdir(ck) if d.isdigit())
    tmp = glob.glob(os.path.join(ck, "*tmp*"))
    parts.append(f"{phase}@{steps[-1] if steps else '-'}" + (" +unfinished save" if tmp else ""))
  if os.path.isfile(os.path.join(workdir, "teacher", "teacher.json")):
    parts.append("teacher")
  return ", ".join(parts) or "nothing yet"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--trials", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  from certvae_jax.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from configs import digits  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    ref, victim = os.path.join(tmp, "ref"), os.path.join(tmp, "victim")
    t0 = time.perf_counter()
    run(ref).wait()
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    for i, delay in enumerate(rng.uniform(0.5, duration, size=a.trials)):
      proc = run(victim)
      time.sleep(delay)
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"trial {i}: killed at {delay:5.2f} s -> {where(victim)}")
      else:
        print(f"trial {i}: finished before {delay:5.2f} s")
    assert run(victim).wait() == 0
    cfg = digits.get_config("smoke")
    states = []
    for wd in (ref, victim):
      runner = train.Runner(cfg, wd, log=lambda _: None)
      with Checkpointer(os.path.join(wd, "full", "checkpoints")) as ckpt:
        states.append(runner.restore(ckpt, 10)[0])
    import jax  # pylint: disable=import-outside-toplevel
    same = all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])))
    sums = [json.load(open(os.path.join(wd, "full", "summary.json"))) for wd in (ref, victim)]
    same_summary = sums[0]["train"] == sums[1]["train"] and sums[0]["test"] == sums[1]["test"]
    print(f"uninterrupted run: {duration:.1f} s; {a.trials} kills; final state bit-identical: "
          f"{same}; summary identical: {same_summary}")
    sys.exit(0 if same and same_summary else 1)


if __name__ == "__main__":
  main()
