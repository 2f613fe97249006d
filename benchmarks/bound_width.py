"""How wide the population bounds are, and how many rows certify a given margin.

    python benchmarks/bound_width.py runs/digits/seed0/full         # a finished phase
    python benchmarks/bound_width.py DIR --margin=0.1 --delta=0.05

Reads the phase's ``predictions.npz`` (test split: teacher rows and witness), then for
each ``n`` draws ``n`` rows with replacement from them (a population with the test
split's spread) and prints the width of each lower bound, ``sample - bound``, as the
median over ``--draws`` draws. A population margin ``m`` is certified at confidence
``1 - delta`` once the width is below ``m``: the last line gives the smallest ``n`` of
the grid where that holds, for each bound.
"""

import argparse
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from certvae_jax.certificate import bounds  # noqa: E402  pylint: disable=wrong-import-position

GRID = (100, 359, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def widths(t: np.ndarray, s: np.ndarray, n: int, delta: float, draws: int, seed: int):
  rng = np.random.default_rng(seed)
  boot, free = [], []
  for d in range(draws):
    idx = rng.integers(0, len(t), n)
    b = bounds.margin_bounds(t[idx], s[idx], delta=delta, num_resamples=1000 if n <= 100_000
                             else 200, key=jax.random.PRNGKey(d))
    boot.append(b.sample - b.bootstrap)
    free.append(b.floored_sample - b.distribution_free)
  return float(np.median(boot)), float(np.median(free))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("phase_dir")
  p.add_argument("--margin", type=float, default=0.1)
  p.add_argument("--delta", type=float, default=0.05)
  p.add_argument("--draws", type=int, default=5)
  a = p.parse_args()
  pred = np.load(os.path.join(a.phase_dir, "predictions.npz"))
  t, s = pred["test_teacher"], pred["test_witness"]
  exact = bounds.margin_bounds(t, s, delta=a.delta)
  print(f"{a.phase_dir}: test split n={len(t)}, K={t.shape[1]}; G_tau={exact.sample:+.3f}, "
        f"bootstrap bound {exact.bootstrap:+.3f}, distribution-free bound "
        f"{exact.distribution_free:+.3f} (delta={a.delta})")
  print("| n | bootstrap width | distribution-free width |\n|---|---|---|")
  first = {"bootstrap": None, "distribution-free": None}
  for n in GRID:
    w_boot, w_free = widths(t, s, n, a.delta, a.draws, seed=n)
    print(f"| {n:,} | {w_boot:.3f} | {w_free:.3f} |", flush=True)
    for name, w in (("bootstrap", w_boot), ("distribution-free", w_free)):
      if first[name] is None and w < a.margin:
        first[name] = n
  print(f"smallest n of the grid certifying a population margin of {a.margin} at "
        f"{1 - a.delta:g}: " + ", ".join(f"{k} {v:,}" if v else f"{k} > {GRID[-1]:,}"
                                         for k, v in first.items()))


if __name__ == "__main__":
  main()
