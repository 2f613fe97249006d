"""Per-layer cost of the 32x32 conv VAE's stride-2 layers: fast forms, plain XLA, PyTorch.

    python benchmarks/conv_layers.py
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/conv_layers.py
    CERTVAE_JAX_RETAIN_HOST_MEMORY=1 python benchmarks/conv_layers.py

Times the forward and backward pass (gradients with respect to input and kernel) of each
4x4 stride-2 convolution and transposed convolution of the cifar100 architecture at batch
128: this library's fast form (``fast=True``, matrix products), XLA's own convolution
(``fast=False``) and, when installed, PyTorch's ``Conv2d`` / ``ConvTranspose2d`` on the
CPU. Median of 3 windows of 10 calls after compilation. Use it to choose
``model.fast_conv`` on a new backend. A layer alone can cost more than inside the train
step: each call maps its temporary buffers afresh (see ``certvae_jax.host_memory``; the
third command above reuses them), and the step fuses some rearrangements with neighbours.
"""

import importlib.util
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH = 128
DOWN = [(32, 3, 32), (16, 32, 64), (8, 64, 128), (4, 128, 256)]   # (H = W, Cin, Cout)
UP = [(2, 256, 128), (4, 128, 64), (8, 64, 32), (16, 32, 3)]


def _median_ms(call, n=10, windows=3):
  call()
  times = []
  for _ in range(windows):
    t0 = time.perf_counter()
    for _ in range(n):
      call()
    times.append((time.perf_counter() - t0) / n)
  return statistics.median(times) * 1e3


def jax_ms(layer, h, cin, cout, fast):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((BATCH, h, h, cin), np.float32))
  k = jnp.asarray(rng.standard_normal((4, 4, cin, cout)).astype(np.float32) * 0.1)
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(layer(x, k, fast) ** 2), argnums=(0, 1)))
  return _median_ms(lambda: jax.block_until_ready(grad(x, k)))


def torch_ms(kind, h, cin, cout):
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_flush_denormal(True)
  module = (torch.nn.Conv2d if kind == "down" else torch.nn.ConvTranspose2d)(cin, cout, 4, 2, 1)
  x = torch.rand(BATCH, cin, h, h, requires_grad=True)

  def call():
    (module(x) ** 2).sum().backward()
  return _median_ms(call)


def main() -> None:
  from certvae_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.retain_from_env()  # before JAX starts its threads
  from certvae_jax.models import conv  # pylint: disable=import-outside-toplevel
  have_torch = importlib.util.find_spec("torch") is not None
  print(f"batch {BATCH}, forward + backward, ms; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"{host_memory.ENV}={os.environ.get(host_memory.ENV, '0')}")
  print("| layer | fast (matrix products) | plain XLA conv | PyTorch |\n|---|---|---|---|")
  totals = [0.0, 0.0, 0.0]
  for kind, layer, shapes in (("down", conv.downsample, DOWN), ("up", conv.upsample, UP)):
    for h, cin, cout in shapes:
      row = [jax_ms(layer, h, cin, cout, True), jax_ms(layer, h, cin, cout, False),
             torch_ms(kind, h, cin, cout) if have_torch else float("nan")]
      totals = [t + r for t, r in zip(totals, row)]
      print(f"| {kind} {h}x{h} {cin}->{cout} | " + " | ".join(f"{r:.1f}" for r in row) + " |")
  print("| total | " + " | ".join(f"{t:.1f}" for t in totals) + " |")


if __name__ == "__main__":
  main()
