"""How each part of a run grows with the data: digits size up to CIFAR-100 size.

Writes a CIFAR-shaped synthetic data set (32x32x3 uint8; ``k`` prototype images, one per
class, plus pixel noise, so a GMM teacher has clusters to find; test rows a fifth of the
training rows) as the npz the library reads, then runs the ``cifar100`` config's model and
evaluation at each size with its step counts cut to ``--steps``: warm-up -> teacher ->
full -> noalign -> rescue. Each size runs in its own process (so its peak memory is its
own) and records, per phase, the wall seconds, the training steps/s and examples/s, and
the seconds of each part: the teacher search (each GMM candidate's fit), each evaluation
(both splits: certificate, diagnostics and the reconstruction check; the linear probe),
the final analyses (post-hoc head, population bounds, the rest), the checkpoint saves
(blocking time; size on disk), the ``predictions.npz`` and summary writes; and the peak
resident memory of the process. The evaluation step and the reconstruction check are timed
by waiting for each of their batches, which takes away a little of the overlap they have in
a plain run.

    python benchmarks/scale.py [--sizes=2000,10000,50000] [--k=10,100] [--steps=50]
                               [--eval_every=N] [--evaluation=auto|config|cpu]
                               [--eval_batch_size=N] [--reconstruction_check_rows=N]
                               [--json=PATH] [--md=PATH]

On a CPU it evaluates as ``--config=cifar100:cpu`` does (32-row evaluation batches, a
2,000-row reconstruction check) unless ``--evaluation=config``.

It prints a Markdown table and the growth exponent of each part between the two largest
sizes (log of the ratio of seconds over log of the ratio of n; 1 is linear).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("warmup", "teacher", "full", "noalign", "rescue")


def synthetic_cifar(path: str, n: int, k: int, seed: int = 0) -> None:
  """``n`` training and ``n // 5`` test rows of 32x32x3 uint8 around ``k`` prototypes."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (k, 4, 4, 3))
  prototypes = coarse.repeat(8, axis=1).repeat(8, axis=2)  # (k, 32, 32, 3), blocky

  def split(rows: int):
    y = rng.integers(0, k, rows)
    x = np.empty((rows, 32, 32, 3), np.uint8)
    for i in range(0, rows, 2000):  # in blocks: the float64 noise of all rows would set
      block = prototypes[y[i:i + 2000]] + rng.normal(0, 30, (len(y[i:i + 2000]), 32, 32, 3))
      x[i:i + 2000] = np.clip(np.round(block), 0, 255)  # the process's peak memory
    return x, y
  x, y = split(n)
  x_test, y_test = split(max(n // 5, 1))
  np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)


class Timer:
  """Seconds per (phase, part), filled by wrappers around the library's functions."""

  def __init__(self):
    self.phase = "setup"
    self.seconds: dict[tuple[str, str], float] = collections.defaultdict(float)
    self.calls: dict[tuple[str, str], int] = collections.defaultdict(int)

  def wrap(self, owner, name: str, part: str, block: bool = False) -> None:
    original = getattr(owner, name)
    timer = self

    def timed(*args, **kwargs):
      t0 = time.perf_counter()
      out = original(*args, **kwargs)
      if block:
        import jax  # pylint: disable=import-outside-toplevel
        jax.block_until_ready(out)
      timer.seconds[(timer.phase, part)] += time.perf_counter() - t0
      timer.calls[(timer.phase, part)] += 1
      return out
    setattr(owner, name, timed)


def instrument(timer: Timer) -> None:
  """Times the parts of a run at the functions that do them (this process only)."""
  from sklearn.mixture import GaussianMixture  # pylint: disable=import-outside-toplevel

  from certvae_jax import certificate, files  # pylint: disable=import-outside-toplevel
  from certvae_jax.evaluation import diagnostics, posthoc, recon_check, splits  # pylint: disable=import-outside-toplevel
  from certvae_jax.training import (  # pylint: disable=import-outside-toplevel
    checkpoint,
    engine,
    phase_loop,
    step as step_lib,
  )
  timer.wrap(GaussianMixture, "fit", "GMM fit, each candidate")
  timer.wrap(phase_loop, "evaluate_splits", "evaluation, both splits (all parts)")
  timer.wrap(splits, "evaluate_split", "one split, all parts")
  eval_step = engine.Engine.eval_step

  def timed_eval_step(self, name, k, plans=()):
    """The compiled evaluation step, waited for, so that the check's time is its own."""
    fn = eval_step(self, name, k, plans)
    holder = types.SimpleNamespace(full=fn.full, latents=fn.latents, reconstruct=fn.reconstruct)
    for part in ("full", "latents"):
      if getattr(holder, part) is not None:
        timer.wrap(holder, part, "evaluation step (certificate + diagnostics)", block=True)
    if fn.reconstruct is not None:
      timer.wrap(holder, "reconstruct", "evaluation step, decoder on the reconstruction rows",
                 block=True)
    return step_lib.EvalStep(holder.full, holder.latents, holder.reconstruct)
  engine.Engine.eval_step = timed_eval_step
  timer.wrap(recon_check.ReconstructionCheck, "batch", "reconstruction check", block=True)
  timer.wrap(diagnostics, "linear_probe_accuracy", "linear probe")
  timer.wrap(phase_loop, "final_analyses", "final analyses (all parts)")
  timer.wrap(posthoc, "posthoc_metrics", "post-hoc head")
  timer.wrap(certificate, "margin_bounds", "population bounds")
  timer.wrap(checkpoint.Checkpointer, "save", "checkpoint save (blocking)")
  timer.wrap(files, "atomic_write", "predictions.npz + summary writes")


def du_mb(path: str) -> float:
  total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
  return total / 2**20


def scaled_config(npz: str, k: int, steps: int, eval_every: int = 0, eval_batch_size: int = 0,
                  reconstruction_rows: int = -1, cpu: bool = False):
  """The ``cifar100`` config (``cifar100:cpu`` with ``cpu``) on ``npz`` with a K-component
  teacher; ``steps``, ``eval_every``, ``eval_batch_size`` and ``reconstruction_rows`` as
  :func:`run_one` takes them."""
  from certvae_jax.configs import cifar100  # pylint: disable=import-outside-toplevel
  c = cifar100.get_config("cpu" if cpu else None)
  c.data.source = f"npz:{npz}"
  c.teacher.components = (k,)
  c.teacher.min_mass = 0.2 / k
  if steps:
    c.warmup.steps = c.train.steps = c.train.checkpoint_every = c.train.log_every = steps
  c.eval.every = eval_every or max(c.warmup.steps, c.train.steps)
  if eval_batch_size:
    c.eval.batch_size = eval_batch_size
  if reconstruction_rows >= 0:
    c.eval.reconstruction_check_rows = reconstruction_rows
  c.train.progress = False
  return c


def run_one(n: int, k: int, steps: int, workdir: str, eval_every: int = 0,
            eval_batch_size: int = 0, reconstruction_rows: int = -1,
            evaluation: str = "auto") -> list[dict]:
  """One size in this process: the rows of every (phase, part).

  ``steps``: warm-up and training steps per phase, 0 for the config's own (5,000 and
  20,000); ``eval_every``: steps between evaluations, 0 for one at the end of each phase;
  ``evaluation``: ``config`` for the ``cifar100`` config's evaluation settings (1,024 rows
  per call, a 10,000-row reconstruction check), ``cpu`` for ``cifar100:cpu``'s (32 and
  2,000), ``auto`` for ``cpu``'s when JAX runs on the CPU; ``eval_batch_size`` (rows per
  evaluation call) and ``reconstruction_rows`` (``eval.reconstruction_check_rows``)
  override them unless 0 and -1.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # pylint: disable=import-outside-toplevel

  from certvae_jax import cli, train  # pylint: disable=import-outside-toplevel
  cli.enable_compilation_cache()
  npz = os.path.join(workdir, "data.npz")
  synthetic_cifar(npz, n, k)
  cpu = evaluation == "cpu" or (evaluation == "auto" and jax.default_backend() == "cpu")
  c = scaled_config(npz, k, steps, eval_every, eval_batch_size, reconstruction_rows, cpu)
  timer = Timer()
  instrument(timer)
  runner = train.Runner(c, os.path.join(workdir, "run"))
  rows, peak_mb = [], lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  actions = (("warmup", runner.run_warmup), ("teacher", runner.ensure_teacher),
             ("full", lambda: runner.run_mode("full")),
             ("noalign", lambda: runner.run_mode("noalign")),
             ("rescue", lambda: runner.run_mode("rescue")))
  for phase, action in actions:
    timer.phase = phase
    t0 = time.perf_counter()
    out = action()
    wall = time.perf_counter() - t0
    base = {"n": n, "k": k, "phase": phase, "peak_rss_mb": round(peak_mb(), 1),
            "steps": {"warmup": c.warmup.steps, "teacher": 0}.get(phase, c.train.steps),
            "eval_batch_size": c.eval.batch_size,
            "reconstruction_check_rows": c.eval.reconstruction_check_rows}
    rows.append(dict(base, part="phase wall", seconds=wall))
    if isinstance(out, dict) and out.get("timing"):
      t = out["timing"]
      rows.append(dict(base, part="training steps", seconds=t["seconds"] - t["eval_seconds"]
                       - t["checkpoint_seconds"], steps_per_s=t["steps_per_s"],
                       examples_per_s=t["examples_per_s"],
                       peak_device_mb=(None if t["peak_device_memory_bytes"] is None
                                       else t["peak_device_memory_bytes"] / 2**20)))
    for (p, part), seconds in sorted(timer.seconds.items()):
      if p == phase:
        rows.append(dict(base, part=part, seconds=seconds, calls=timer.calls[(p, part)]))
    ckpts = os.path.join(workdir, "run", phase, "checkpoints")
    if os.path.isdir(ckpts):
      rows.append(dict(base, part="checkpoints on disk", seconds=0.0, mb=du_mb(ckpts)))
  return rows


def growth(rows: list[dict]) -> list[tuple[int, str, str, float]]:
  """``(k, phase, part, exponent)`` between the two largest sizes of each k."""
  out = []
  for k in sorted({r["k"] for r in rows}):
    sizes = sorted({r["n"] for r in rows if r["k"] == k})
    if len(sizes) < 2:
      continue
    lo, hi = sizes[-2], sizes[-1]
    at = {(r["n"], r["phase"], r["part"]): r["seconds"] for r in rows if r["k"] == k}
    for (n, phase, part), s in at.items():
      if n == hi and at.get((lo, phase, part), 0) > 0.05 and s > 0:
        out.append((k, phase, part, math.log(s / at[(lo, phase, part)]) / math.log(hi / lo)))
  return out


def markdown(rows: list[dict], machine: str) -> str:
  sizes = sorted({r["n"] for r in rows})
  out = [f"Seconds per part ({machine}); columns are training rows n.", ""]
  for k in sorted({r["k"] for r in rows}):
    out += [f"K = {k}:", "", "| phase | part | " + " | ".join(f"n = {n}" for n in sizes)
            + " |", "|---|---|" + "---|" * len(sizes)]
    keys = list(dict.fromkeys((r["phase"], r["part"]) for r in rows if r["k"] == k))
    for phase, part in keys:
      cells = []
      for n in sizes:
        r = next((r for r in rows if (r["k"], r["n"], r["phase"], r["part"]) == (k, n, phase,
                                                                                   part)), None)
        if r is None:
          cells.append("-")
        elif part == "checkpoints on disk":
          cells.append(f"{r['mb']:.1f} MB")
        elif part == "training steps" and r.get("steps_per_s"):
          cells.append(f"{r['seconds']:.2f} ({r['steps_per_s']:.1f} steps/s)")
        else:
          cells.append(f"{r['seconds']:.2f}")
      out.append(f"| {phase} | {part} | " + " | ".join(cells) + " |")
    peaks = {n: max(r["peak_rss_mb"] for r in rows if r["k"] == k and r["n"] == n)
             for n in sizes if any(r["k"] == k and r["n"] == n for r in rows)}
    out += ["", "Peak resident memory: " + ", ".join(f"{v:.0f} MB at n = {n}"
                                                    for n, v in peaks.items()), ""]
  exps = growth(rows)
  if exps:
    out += ["Growth exponents between the two largest sizes (parts over 0.05 s):", "",
            "| K | phase | part | exponent |", "|---|---|---|---|"]
    out += [f"| {k} | {phase} | {part} | {e:.2f} |" for k, phase, part, e in exps]
  return "\n".join(out) + "\n"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="2000,10000,50000", help="training rows, comma-separated")
  p.add_argument("--k", default="10,100", help="teacher components (and classes)")
  p.add_argument("--steps", type=int, default=50,
                 help="warm-up and training steps per phase (0: the config's own)")
  p.add_argument("--eval_every", type=int, default=0,
                 help="steps between evaluations (0: one at the end of each phase)")
  p.add_argument("--evaluation", choices=("auto", "config", "cpu"), default="auto",
                 help="evaluation settings: the cifar100 config's (1,024 rows per call, a "
                      "10,000-row reconstruction check), cifar100:cpu's (32 and 2,000), or "
                      "auto: cpu's when JAX runs on the CPU, the config's otherwise")
  p.add_argument("--eval_batch_size", type=int, default=0,
                 help="rows per evaluation call (0: as --evaluation sets it)")
  p.add_argument("--reconstruction_check_rows", type=int, default=-1,
                 help="rows of each split the reconstruction side reads (-1: as --evaluation "
                      "sets it; 0: every row)")
  p.add_argument("--json", help="write the rows here")
  p.add_argument("--md", help="write the Markdown table here")
  p.add_argument("--one", help=argparse.SUPPRESS)  # "n,k,workdir": one size, rows on stdout
  a = p.parse_args()
  if a.one:
    n, k, workdir = a.one.split(",", 2)
    with contextlib.redirect_stdout(sys.stderr):
      rows = run_one(int(n), int(k), a.steps, workdir, a.eval_every, a.eval_batch_size,
                     a.reconstruction_check_rows, a.evaluation)
    print(json.dumps(rows))
    return
  rows, t0 = [], time.perf_counter()
  for k in (int(v) for v in a.k.split(",")):
    for n in (int(v) for v in a.sizes.split(",")):
      with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, __file__, f"--steps={a.steps}",
                               f"--eval_every={a.eval_every}",
                               f"--eval_batch_size={a.eval_batch_size}",
                               f"--reconstruction_check_rows={a.reconstruction_check_rows}",
                               f"--evaluation={a.evaluation}",
                               f"--one={n},{k},{tmp}"], cwd=ROOT, check=True,
                              stdout=subprocess.PIPE, text=True)
      rows += json.loads(done.stdout)
      print(f"n={n} K={k}: done ({time.perf_counter() - t0:.0f} s so far)", file=sys.stderr)
  machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
  eval_batch, recon_rows = rows[0]["eval_batch_size"], rows[0]["reconstruction_check_rows"]
  # The page names the command that regenerates it, its date and its wall time.
  table = (f"`python benchmarks/scale.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')})."
           f"\n\nEvaluation batch: {eval_batch} rows; reconstruction side: "
           f"{recon_rows or 'every'} rows of each split.\n\n" + markdown(rows, machine)
           + f"\nWall time of this benchmark: {time.perf_counter() - t0:.0f} s\n")
  print(table)
  if a.json:
    with open(a.json, "w") as fh:
      json.dump({"machine": machine, "steps": a.steps, "eval_batch_size": eval_batch,
                 "reconstruction_check_rows": recon_rows, "rows": rows}, fh, indent=1)
  if a.md:
    with open(a.md, "w") as fh:
      fh.write(table)


if __name__ == "__main__":
  main()
