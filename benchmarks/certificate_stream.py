"""Throughput of the streamed certificate (issue 2; the one-pass sums of the certificate).

Streams N rows of (teacher, student) in batches through ``CertificateStats`` and
compares with a single NumPy pass computing only ``sum(T * log S)`` over the same
arrays. Reports rows per second and the resident-memory growth of the streaming
pass (the arrays themselves are allocated before either timing).

    python benchmarks/certificate_stream.py [--n 1000000] [--k 100] [--batch 65536]
"""

import argparse
import resource
import time

import jax
import numpy as np

from certvae_jax import certificate as cert


def rss_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=1_000_000)
  p.add_argument("--k", type=int, default=100)
  p.add_argument("--batch", type=int, default=65_536)
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args()

  rng = np.random.default_rng(0)
  t = rng.dirichlet(np.full(a.k, 0.3), size=a.n).astype(np.float32)
  s = rng.dirichlet(np.full(a.k, 1.0), size=a.n).astype(np.float32)
  starts = range(0, a.n, a.batch)

  def numpy_pass():
    total = 0.0
    for i in starts:
      total += float(np.sum(t[i:i + a.batch] * np.log(s[i:i + a.batch])))
    return total

  def streamed():
    stats = cert.CertificateStats.zeros(a.k)
    for i in starts:
      stats = stats.update(t[i:i + a.batch], s[i:i + a.batch], validate=False)
    return stats.finalize()

  streamed()  # compile the full and the last (partial) batch shapes
  rss0 = rss_mib()
  times = {"numpy sum(T log S)": [], "streamed report": []}
  for _ in range(a.repeats):
    for name, fn in (("numpy sum(T log S)", numpy_pass), ("streamed report", streamed)):
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  growth = rss_mib() - rss0
  best = {k: min(v) for k, v in times.items()}
  print(f"N={a.n:,} K={a.k} batch={a.batch:,} float32, {jax.devices()[0].platform}, "
        f"best of {a.repeats}")
  for name, sec in best.items():
    print(f"  {name:22s} {sec * 1e3:8.1f} ms  {a.n / sec / 1e6:6.2f} M rows/s")
  print(f"  ratio streamed / numpy: {best['streamed report'] / best['numpy sum(T log S)']:.2f}")
  print(f"  resident memory growth during timing: {growth:.1f} MiB "
        f"(one batch of T and S is {2 * a.batch * a.k * 4 / 2**20:.1f} MiB); "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        f"including the {2 * a.n * a.k * 4 / 2**20:.0f} MiB input arrays")


if __name__ == "__main__":
  main()
