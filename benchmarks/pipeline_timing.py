"""Wall-clock times of the command-line pipeline on this machine (issue 3).

Times, from empty work directories, ``launch/train.py --mode=full`` (warm-up, teacher
search, full training, evaluation) and ``launch/protocol.py --seeds=3`` (3 seeds x
warm-up, teacher, full, noalign, rescue), with the default config. Run it twice to
see the effect of the persistent compilation cache (the second run skips XLA
compiles); pass ``--cold`` to use an empty cache.

    python benchmarks/pipeline_timing.py [--cold] [--config=configs/digits.py]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(args: list[str], env: dict[str, str]) -> float:
  t0 = time.perf_counter()
  subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - t0


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cold", action="store_true", help="use an empty compilation cache")
  p.add_argument("--config", default=os.path.join(ROOT, "configs", "digits.py"))
  a = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ)
    if a.cold:
      env["CERTVAE_JAX_COMPILATION_CACHE"] = os.path.join(tmp, "xla")
    full = timed(["launch/train.py", "--mode=full", f"--config={a.config}",
                  "--config.train.progress=False", f"--workdir={tmp}/full"], env)
    proto = timed(["launch/protocol.py", "--seeds=3", f"--config={a.config}",
                   "--config.train.progress=False", f"--workdir={tmp}/protocol"], env)
  print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; compilation cache {'cold' if a.cold else 'as found'}")
  print(f"launch/train.py --mode=full (empty workdir): {full:6.1f} s")
  print(f"launch/protocol.py --seeds=3 (empty workdir): {proto:6.1f} s")


if __name__ == "__main__":
  main()
