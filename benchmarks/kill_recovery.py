"""Stop a training run with a signal at random moments, resume it, and check nothing
was lost.

Runs ``launch/train.py --mode=full`` on the smoke config (checkpoint every 2 steps, so
many kills land inside a save; a metrics row every step, so the step a run reached is
on disk). Each trial starts from an empty workdir, sends the signal once at a uniformly
random moment, runs the same command again to completion, and compares the final
parameters (bit for bit) and the summary with an uninterrupted run. For each trial it
records where the run was (the phases present, the latest complete checkpoint, whether
an unfinished checkpoint was left behind), its exit code, and the steps lost: the step
the run had reached (its last metrics row) minus the step the rerun resumed from.
SIGTERM and SIGINT save the step reached (goal: 0 lost); SIGKILL cannot be caught, so up
to ``checkpoint_every - 1`` steps are lost.

    python benchmarks/kill_recovery.py [--trials 10] [--seed 0] [--signal KILL|TERM|INT]
"""

import argparse
import glob
import json
import os
import re
import shutil
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
         "--config.eval.every=20", "--config.train.log_every=1"]


def run(workdir: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                           "--mode=full", f"--workdir={workdir}", *FLAGS],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def steps_lost(workdir: str, stopped_stderr: str, rerun_stderr: str) -> int | None:
  """The step the stopped run had reached in the phase it was in, minus the step the rerun
  resumed it from (or the step it said it saved); None when it stopped between phases."""
  found = (re.search(r"^(\w+): resuming from step (\d+)", rerun_stderr, re.M)
           or re.search(r"^(\w+): preempted at step (\d+)", stopped_stderr, re.M))
  if not found:
    return None
  phase, resumed = found.group(1), int(found.group(2))
  with open(os.path.join(workdir, phase, "metrics.jsonl.before")) as fh:
    reached = max((json.loads(l)["step"] for l in fh if l.strip().endswith("}")), default=0)
  return reached - resumed


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
  p.add_argument("--signal", choices=("KILL", "TERM", "INT"), default="KILL")
  a = p.parse_args()
  signum = getattr(signal, f"SIG{a.signal}")
  # SIGINT as a terminal gives it: a shell's background job (nohup, &) ignores SIGINT, and
  # the runs started here would inherit that; a handled signal is reset on exec.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  from certvae_jax.training.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from configs import digits  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    ref = os.path.join(tmp, "ref")
    t0 = time.perf_counter()
    reference = run(ref)
    _, err = reference.communicate()
    if reference.returncode != 0:
      sys.exit(f"the uninterrupted run failed:\n{err[-2000:]}")
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
    results, lost = [], []
    for i, delay in enumerate(rng.uniform(1.0, duration, size=a.trials)):
      victim = os.path.join(tmp, f"victim{i}")
      proc = run(victim)
      time.sleep(delay)
      killed = proc.poll() is None
      if killed:
        proc.send_signal(signum)
      _, err = proc.communicate()
      state = where(victim) if killed else "finished before the signal"
      for log in glob.glob(os.path.join(victim, "*", "metrics.jsonl")):
        shutil.copyfile(log, log + ".before")  # the stopped run's rows; the rerun rewrites it
      rerun = run(victim)
      _, rerun_err = rerun.communicate()
      assert rerun.returncode == 0, rerun_err[-2000:]
      leaves, summary = final(victim)
      same = all(np.array_equal(np.asarray(x), np.asarray(y))
                 for x, y in zip(leaves, ref_leaves)) and summary == ref_summary
      results.append(same)
      n = steps_lost(victim, err, rerun_err) if killed else 0
      lost.append(n)
      said = [l for l in err.splitlines() if "preempted" in l or l.startswith("error:")]
      print(f"trial {i}: SIG{a.signal} at {delay:5.2f} s -> {state}; exit {proc.returncode}"
            f"{'; ' + said[-1] if said else ''}; steps lost: "
            f"{'- (between phases)' if n is None else n}; resumed result identical: {same}")
    counted = [n for n in lost if n is not None]
    print(f"uninterrupted run: {duration:.1f} s; {a.trials} independent SIG{a.signal}s; every "
          f"resumed run bit-identical to the uninterrupted one: {all(results)}; steps lost "
          f"per trial: max {max(counted, default=0)}, total {sum(counted)}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
  main()
