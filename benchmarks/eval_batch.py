"""Evaluation throughput of a config's model by evaluation batch size (rows per call).

    python benchmarks/eval_batch.py                                  # cifar100, 32..1024
    python benchmarks/eval_batch.py --config=tiny_imagenet --sizes=32,64,1024

Times the compiled evaluation step of the config's objective (:class:`EvalStep`) on random
uint8 images and random teacher rows, at each batch size, over ``--rows`` rows after one
call that compiles: the pass without the decoder that every row of a split gets
(``latents``: encoder, witness, the certificate's sums), the whole step (``full``), and
the decoder's outputs on the reconstruction rows (``reconstruct``). Prints rows/s per
part and size, and the time of one evaluation of 50,000 + 10,000 rows with 10,000 + 10,000
reconstruction rows (the cifar100 protocol's splits: the latent pass and the decoder's
outputs, not the reconstruction check) at each size, from those rates. The
parameters are the initial ones: the speed of a forward pass does not depend on them.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def check(sizes: list[int], rows: int) -> None:
  """Raises ValueError for a size that is not positive or fewer rows than one batch."""
  if not sizes or min(sizes) < 1:
    raise ValueError(f"--sizes: expected positive batch sizes, got {sizes}")
  if rows < max(sizes):
    raise ValueError(f"--rows: {rows} rows cannot fill one batch of {max(sizes)}")


def rates(config_name: str, sizes: list[int], rows: int) -> dict[int, dict[str, float]]:
  """``{batch size: {part: rows/s}}`` (arguments checked by :func:`check`)."""
  check(sizes, rows)
  import jax  # pylint: disable=import-outside-toplevel

  from certvae_jax import configs, objectives  # pylint: disable=import-outside-toplevel
  from certvae_jax.models.vae import build_model, init_params  # pylint: disable=import-outside-toplevel
  from certvae_jax.training import step as step_lib  # pylint: disable=import-outside-toplevel

  c = configs.get_config(config_name)
  k = int(max(c.teacher.components))
  side = {"cifar100": 32, "cifar10": 32, "tiny_imagenet": 64}.get(config_name.split(":")[0], 32)
  shape = (side, side, 3)
  dim = int(np.prod(shape))
  model = build_model(c.model, dim, k, shape)
  params = init_params(model, jax.random.PRNGKey(0), dim, k)
  step = step_lib.make_eval_step(objectives.build("teacher_guided", model, c))
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (rows, dim), dtype=np.uint8)
  t = rng.dirichlet(np.ones(k), rows).astype(np.float32)
  parts = {"latents": step.latents, "full": step.full,
           "reconstruct": lambda p, xb, tb, mask, key: step.reconstruct(p, xb, tb, key)}
  out: dict[int, dict[str, float]] = {}
  for size in sizes:
    mask = np.ones(size, bool)
    out[size] = {}
    for name, fn in parts.items():
      jax.block_until_ready(fn(params, x[:size], t[:size], mask, jax.random.PRNGKey(0)))
      tick = time.perf_counter()
      results = [fn(params, x[i:i + size], t[i:i + size], mask, jax.random.PRNGKey(i))
                 for i in range(0, rows - size + 1, size)]
      jax.block_until_ready(results)
      out[size][name] = (rows // size) * size / (time.perf_counter() - tick)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="cifar100", help="a shipped config's name")
  p.add_argument("--sizes", default="32,64,128,1024", help="batch sizes, comma-separated")
  p.add_argument("--rows", type=int, default=8192, help="rows timed per part and size")
  args = p.parse_args()
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
    check(sizes, args.rows)
  except ValueError as e:
    p.error(str(e))
  found = rates(args.config, sizes, args.rows)
  import jax  # pylint: disable=import-outside-toplevel
  print(f"{args.config}, {args.rows} rows per part; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print("| eval batch | latents rows/s | full rows/s | reconstruct rows/s | "
        "latents on 60,000 rows + decoder outputs on 20,000 |")
  print("|---|---|---|---|---|")
  for size, r in found.items():
    seconds = 60000 / r["latents"] + 20000 / r["reconstruct"]
    print(f"| {size} | {r['latents']:.0f} | {r['full']:.0f} | {r['reconstruct']:.0f} | "
          f"{seconds:.1f} s |")


if __name__ == "__main__":
  main()
