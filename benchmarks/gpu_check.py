"""One command for an accelerator: its tests, its throughput and one seed of the CIFAR-100
protocol, written to ``docs/results/gpu_<device>.md``.

    python benchmarks/gpu_check.py                  # on a GPU machine (under 8 minutes)
    python benchmarks/gpu_check.py --smoke --out=/tmp/check.md   # any machine, a minute

Three parts, each in its own process (JAX takes most of a GPU's memory when it starts):

1. the tests that exercise the device path (the certificate and paper 2's fixed witness,
   whose float32 products the GPU rounds unless asked not to; every mode on both model
   families; several steps per compiled call; the training entry points) on the default JAX
   platform, in one process, memory allocated as needed;
2. ``benchmarks/throughput.py`` for both models, JAX only, one round;
3. the ``cifar100`` config's protocol for one seed at its real step counts (5,000 warm-up,
   3 x 20,000 training steps) on CIFAR-shaped synthetic data (50,000 + 10,000 rows, K = 100;
   no download; :mod:`benchmarks.scale`), evaluating once at the end of each phase.

The page gives steps/s, examples/s, each phase's seconds, the peak device memory and the
projected time of the 3-seed protocol, in which each phase evaluates every ``eval.every``
steps (each evaluation costing what the measured one did). ``--smoke`` cuts every part to
seconds (collects the tests instead of running them; 300 rows, K = 10, 10 steps), so that
CI keeps this script working on a CPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_TESTS = ("tests/test_certificate.py", "tests/test_simplex.py", "tests/test_mode_matrix.py",
                "tests/test_steps_per_call.py", "tests/test_train.py")
PHASES = ("warmup", "teacher", "full", "noalign", "rescue")
SEEDS = 3


def _env(**extra: str) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
  env.pop("XLA_FLAGS", None)  # a forced CPU device count would change what is measured
  return env


def _run(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
  done = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kwargs)
  if check and done.returncode != 0:
    raise SystemExit(f"error: {' '.join(cmd[:4])} ... exited with {done.returncode}:\n"
                     f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
  return done


def device() -> tuple[str, str]:
  """``(backend, device kind)`` of JAX's default device, asked in a child process."""
  out = _run([sys.executable, "-c", "import jax; d = jax.devices()[0]; "
              "print(d.platform); print(d.device_kind)"], env=_env()).stdout.split("\n")
  return out[0].strip(), out[1].strip()


def run_tests(backend: str, smoke: bool) -> tuple[bool, str]:
  """``(passed, what pytest said)``: its last line, and the failed tests' lines. A failure
  does not stop the check: the page says which tests failed on the device."""
  cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-n", "0", "-p", "no:cacheprovider",
         *DEVICE_TESTS]
  if smoke:
    cmd.append("--collect-only")
  done = _run(cmd, check=False,
              env=_env(JAX_PLATFORMS=backend, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
  lines = done.stdout.strip().splitlines() or ["(no output)"]
  failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
  return done.returncode == 0, "; ".join([lines[-1], *failed])


def run_throughput(smoke: bool) -> str:
  """``benchmarks/throughput.py``'s Markdown table (JAX rows)."""
  cmd = [sys.executable, "benchmarks/throughput.py", "--no-torch", "--repeats=1"]
  if smoke:
    cmd.append("--models=mlp")
  return _run(cmd, env=_env()).stdout.strip()


def run_protocol(n: int, k: int, steps: int) -> list[dict]:
  """One seed of the protocol (:func:`benchmarks.scale.run_one`): its rows."""
  with tempfile.TemporaryDirectory() as tmp:
    done = _run([sys.executable, "benchmarks/scale.py", f"--steps={steps}",
                 f"--one={n},{k},{tmp}"], env=_env())
  return json.loads(done.stdout)


def _parts(rows: list[dict], phase: str) -> dict[str, dict]:
  """The rows of one phase, by part."""
  return {r["part"]: r for r in rows if r["phase"] == phase}


def projection(rows: list[dict], eval_every: int, seeds: int = SEEDS) -> float:
  """Seconds of ``seeds`` seeds of the protocol when each phase evaluates every
  ``eval_every`` steps, from one seed that evaluated once per phase."""
  total = 0.0
  for phase in PHASES:
    at = _parts(rows, phase)
    seconds = at["phase wall"]["seconds"]
    measured = at.get("evaluation, both splits (all parts)")
    if measured and measured["calls"]:
      each = measured["seconds"] / measured["calls"]
      wanted = math.ceil(at["phase wall"]["steps"] / eval_every)
      seconds += (wanted - measured["calls"]) * each
    total += seconds
  return seeds * total


def versions() -> str:
  """The versions the page's numbers came from."""
  found = []
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "scikit-learn", "numpy"):
    try:
      found.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      found.append(f"{name} (not installed)")
  return (f"Python {platform.python_version()}, " + ", ".join(found)
          + f"; {os.cpu_count()} CPU cores")


def _cell(value: float | None, digits: int) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def page(kind: str, backend: str, tests: str, throughput: str, rows: list[dict],
         eval_every: int, command: str, wall: float) -> str:
  """The Markdown page of one check."""
  n, k = rows[0]["n"], rows[0]["k"]
  out = [f"# Device check: {kind} ({backend})", "",
         f"Written by `{command}` on {datetime.date.today().isoformat()}; the whole check "
         f"took {wall:.0f} s. {versions()}.", "", "## Tests", "", f"`{' '.join(DEVICE_TESTS)}`: {tests}", "",
         "## Throughput (`benchmarks/throughput.py --no-torch --repeats=1`)", "",
         # Blank lines around the table, so that the lines before and after stay text.
         throughput.replace("\n|", "\n\n|", 1).replace("\n(", "\n\n("), "",
         f"## One seed of the protocol ({n} training rows, K = {k})", "",
         "| phase | steps | seconds | of which training | of which evaluation | steps/s | "
         "examples/s | peak device memory (MB) |", "|---|---|---|---|---|---|---|---|"]
  for phase in PHASES:
    at = _parts(rows, phase)
    train = at.get("training steps", {})
    evaluation = at.get("evaluation, both splits (all parts)", {})
    cells = [_cell(train.get("seconds"), 1), _cell(evaluation.get("seconds"), 1)]
    cells += [_cell(train.get(key), digits) for key, digits in
              (("steps_per_s", 1), ("examples_per_s", 0), ("peak_device_mb", 0))]
    out.append(f"| {phase} | {at['phase wall']['steps']} | {at['phase wall']['seconds']:.1f} | "
               + " | ".join(cells) + " |")
  hours = projection(rows, eval_every) / 3600
  out += ["", f"Each phase evaluated once, at its end. Projected time of the {SEEDS}-seed "
          f"protocol, evaluating every {eval_every} steps as the config does: "
          f"**{hours:.2f} h** (each evaluation costing what the measured one did).", ""]
  return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="every part cut to seconds (CI)")
  p.add_argument("--out", help="the page to write (default docs/results/gpu_<device>.md)")
  a = p.parse_args(argv)
  t0 = time.perf_counter()
  backend, kind = device()
  print(f"device: {kind} ({backend})", file=sys.stderr)
  passed, tests = run_tests(backend, a.smoke)
  print(f"tests: {tests}", file=sys.stderr)
  throughput = run_throughput(a.smoke)
  rows = run_protocol(*((300, 10, 10) if a.smoke else (50000, 100, 0)))
  sys.path.insert(0, ROOT)
  from certvae_jax.configs import cifar100  # pylint: disable=import-outside-toplevel
  eval_every = cifar100.get_config().eval.every  # what the real protocol does
  command = "python benchmarks/gpu_check.py" + (" --smoke" if a.smoke else "")
  text = page(kind, backend, tests, throughput, rows, eval_every, command,
              time.perf_counter() - t0)
  out = a.out or os.path.join(ROOT, "docs", "results",
                              "gpu_" + re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")
                              + ".md")
  with open(out, "w") as fh:
    fh.write(text)
  print(text)
  print(f"wrote {out}", file=sys.stderr)
  if not passed:
    raise SystemExit(f"error: the device tests did not pass: {tests}")


if __name__ == "__main__":
  main()
