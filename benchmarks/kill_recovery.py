"""Kill -9 a training run at random moments, resume it, and check nothing was lost.

Runs ``launch/train.py --mode=full`` on the smoke config (checkpoint every 2 steps, so
many kills land inside a save). Each trial starts from an empty workdir, kills the run
once at a uniformly random moment, runs the same command again to completion, and
compares the final parameters (bit for bit) and the summary with an uninterrupted run.
For each kill it records where the run was: the phases present, the latest complete
checkpoint, and whether an unfinished (temporary) checkpoint directory was left
behind, i.e. the kill hit a save.

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
  from certvae_jax.training.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from configs import digits  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    ref = os.path.join(tmp, "ref")
    t0 = time.perf_counter()
    run(ref).wait()
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    cfg = digits.get_config("smoke")
    import jax  # pylint: disable=import-outside-toplevel

    def final(wd):
      runner = train.Runner(cfg, wd)
      with Checkpointer(os.path.join(wd, "full", "checkpoints")) as ckpt:
        state = runner.restore(ckpt, 10)[0]
      summary = json.load(open(os.path.join(wd, "full", "summary.json")))
      return jax.tree.leaves(state), (summary["train"], summary["test"])

    ref_leaves, ref_summary = final(ref)
    results = []
    for i, delay in enumerate(rng.uniform(1.0, duration, size=a.trials)):
      victim = os.path.join(tmp, f"victim{i}")
      proc = run(victim)
      time.sleep(delay)
      killed = proc.poll() is None
      if killed:
        proc.send_signal(signal.SIGKILL)
      proc.wait()
      state = where(victim) if killed else "finished before the kill"
      assert run(victim).wait() == 0
      leaves, summary = final(victim)
      same = all(np.array_equal(np.asarray(x), np.asarray(y))
                 for x, y in zip(leaves, ref_leaves)) and summary == ref_summary
      results.append(same)
      print(f"trial {i}: kill at {delay:5.2f} s -> {state}; resumed result identical: {same}")
    print(f"uninterrupted run: {duration:.1f} s; {a.trials} independent kills; every resumed "
          f"run bit-identical to the uninterrupted one: {all(results)}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
  main()
