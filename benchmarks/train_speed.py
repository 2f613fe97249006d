"""End-to-end training speed of a config on the current devices, on synthetic images.

    python benchmarks/train_speed.py                          # cifar100 config, short run
    python benchmarks/train_speed.py --warmup_steps=5000 --train_steps=20000   # full length

Runs warm-up, teacher search and ``--mode=full`` of ``configs/cifar100.py`` through
``certvae_jax.train.train`` (everything a user's run does: checkpoints, evaluations,
metrics) on a synthetic CIFAR-shaped ``.npz`` (no download needed): 100 smooth class
prototypes plus pixel noise, uint8. Runs once with the training split on the device
(``data.on_device=True``, the default) and once with host-made batches, and prints each
phase's wall time (and the part spent in evaluations and checkpoint saves), the training
steps/s and images/s between the first and last host syncs (without compilation,
evaluations and saves) and the peak device memory where the backend reports it. The certificate numbers on synthetic data mean nothing.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def synthetic_images(path: str, n: int, classes: int = 100, seed: int = 0) -> None:
  """Writes ``n`` 32x32x3 uint8 images in ``classes`` clusters (with labels) to ``path``."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((classes, 4, 4, 3))
  prototypes = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # smooth 32x32x3 patterns
  y = rng.integers(0, classes, n)
  x = prototypes[y] + 0.1 * rng.standard_normal((n, 32, 32, 3))
  np.savez(path, x=np.clip(x * 255, 0, 255).astype(np.uint8), y=y.astype(np.int64))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--examples", type=int, default=50000)
  p.add_argument("--warmup_steps", type=int, default=1000)
  p.add_argument("--train_steps", type=int, default=2000)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--teacher_seeds", type=int, default=1)
  p.add_argument("--config", default="cifar100", choices=("cifar100", "smoke"))
  p.add_argument("--steps_per_call", type=int, default=None,
                 help="train.steps_per_call (default: the config's)")
  p.add_argument("--unroll_steps", action="store_true", help="unroll instead of lax.scan")
  p.add_argument("--on_device_only", action="store_true", help="skip the host-batches run")
  a = p.parse_args()

  import jax  # pylint: disable=import-outside-toplevel

  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  from configs import cifar100  # pylint: disable=import-outside-toplevel

  tmp = tempfile.mkdtemp(prefix="train_speed_")
  data = os.path.join(tmp, "images.npz")
  synthetic_images(data, a.examples)
  print(f"devices: {jax.devices()}", flush=True)
  rows = []
  for on_device in (True,) if a.on_device_only else (True, False):
    c = cifar100.get_config("smoke" if a.config == "smoke" else None)
    if a.steps_per_call is not None:
      c.train.steps_per_call = a.steps_per_call
    c.train.unroll_steps = a.unroll_steps
    c.data.source = f"npz:{data}"
    c.data.on_device = on_device
    c.warmup.steps, c.train.steps = a.warmup_steps, a.train_steps
    c.train.batch_size = a.batch_size
    c.train.checkpoint_every = c.eval.every = max(a.train_steps // 2, 1)
    c.teacher.seeds = tuple(range(a.teacher_seeds))
    c.train.progress = False
    workdir = os.path.join(tmp, f"run_{on_device}")
    t0 = time.perf_counter()
    full = train.train(c, "full", workdir)
    total = time.perf_counter() - t0
    with open(os.path.join(workdir, "warmup", "summary.json")) as fh:
      warm = json.load(fh)
    for name, s in (("warmup", warm), ("full", full)):
      rows.append((on_device, name, s["timing"]))
    rows.append((on_device, "whole run (warm-up, teacher, full, evals)", {"seconds": total}))
    print(f"on_device={on_device}: {total:.1f} s; full G_tau={full['train']['margin']:+.3f}",
          flush=True)
  shutil.rmtree(tmp, ignore_errors=True)
  print(f"\nconfig {a.config}, batch {a.batch_size}, {a.examples} synthetic 32x32x3 images, "
        f"steps_per_call {c.train.steps_per_call} ({'unrolled' if a.unroll_steps else 'scan'})")
  print("| data | phase | steps | wall (s) | of which eval (s) | of which checkpoints (s) | "
        "training steps/s | images/s | peak device memory (MiB) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for on_device, name, t in rows:
    def fmt(key, scale=1.0, digits=1):
      v = t.get(key)
      return "-" if v is None else f"{v * scale:.{digits}f}"
    print(f"| {'on device' if on_device else 'host batches'} | {name} | {t.get('steps', '-')} | "
          f"{fmt('seconds')} | {fmt('eval_seconds')} | {fmt('checkpoint_seconds')} | "
          f"{fmt('steps_per_s')} | {fmt('examples_per_s', digits=0)} | "
          f"{fmt('peak_device_memory_bytes', 1 / 2**20, 0)} |")


if __name__ == "__main__":
  main()
