"""Training throughput: JAX (this library's train step) against PyTorch, same architectures.

    python benchmarks/throughput.py                    # both models, 1 CPU device, PyTorch
    python benchmarks/throughput.py --models=mlp --devices=1,2,4 --no-torch
    python benchmarks/throughput.py --ynn_off          # also JAX with YNNPACK fusion off
    python benchmarks/throughput.py --retain_host_memory  # also with freed memory retained

Models: the digits MLP VAE (64-256-256, d = 16, K = 10, Bernoulli) and the 32x32x3 conv VAE
(32-64-128-256 stride 2, latent 64, K = 100, Gaussian). Each step does everything a training
step does here: encoder, reparameterisation, decoder, KL, alignment to teacher rows, balance,
Adam. Reported: compile time of the first call, then the median of timed windows, per step.

JAX runs in a subprocess per row (the device count and XLA flags are fixed when JAX starts):
one step per compiled call, and ``train.steps_per_call`` steps per call (the model's config
default: 10 for the MLP, 5 for the conv VAE) as a ``lax.scan`` and unrolled, state donated.
PyTorch (optional: ``pip install torch``; never needed by the tests) runs eager, and with
``torch.compile`` (default mode) on the loss after three warm-up steps, on the CPU with
denormals flushed, the fair setting. ``--retain_host_memory`` adds JAX rows with
``CERTVAE_JAX_RETAIN_HOST_MEMORY=1`` (see ``certvae_jax.host_memory``).

Every row runs ``--repeats`` times (default 3), round-robin over the rows, so that a slow
spell of a shared machine falls on every row alike. The table gives each row's median step
(and the range), and each JAX row's speed relative to PyTorch eager and to ``torch.compile``
as the median over rounds of the ratio within a round.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from certvae_jax import host_memory  # noqa: E402  # pylint: disable=wrong-import-position

MODELS = {  # name -> (input shape, K, latent, batch)
    "mlp": ((64,), 10, 16, 128),
    "conv": ((32, 32, 3), 100, 64, 128),
}


def _batch(shape, k, batch, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((batch, int(np.prod(shape)))).astype(np.float32)
  t = rng.dirichlet(np.full(k, 0.3), size=batch).astype(np.float32)
  return x, t


def _time(step, n_windows=5, window=20):
  """Median seconds per step of ``n_windows`` calls of ``step(window)``."""
  times = []
  for _ in range(n_windows):
    t0 = time.perf_counter()
    step(window)
    times.append((time.perf_counter() - t0) / window)
  return statistics.median(times)


def _chunk(step_fn, n: int, unroll: bool):
  """``n`` applications of ``step_fn`` to one batch in one jit, as the engine builds them."""
  import jax  # pylint: disable=import-outside-toplevel

  if n == 1:
    return step_fn  # already jitted with the state donated

  def chunk(state, batch):
    if not unroll:
      return jax.lax.scan(lambda s, _: step_fn(s, batch), state, None, length=n)
    for _ in range(n):
      state, metrics = step_fn(state, batch)
    return state, metrics

  return jax.jit(chunk, donate_argnums=0)


def jax_worker(model_name: str, batch: int, per_call: int, unroll: bool) -> dict:
  """Runs inside a subprocess with the forced device count and XLA flags."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel

  from certvae_jax import objectives  # pylint: disable=import-outside-toplevel
  from certvae_jax.models.vae import build_model, init_params  # pylint: disable=import-outside-toplevel
  from certvae_jax.training import step
  from configs import cifar100, digits  # pylint: disable=import-outside-toplevel

  shape, k, latent, _ = MODELS[model_name]
  config = digits.get_config() if model_name == "mlp" else cifar100.get_config()
  config.model.latent_dim = latent
  per_call = per_call or config.train.steps_per_call
  model = build_model(config.model, int(np.prod(shape)), k, shape if len(shape) == 3 else None)
  tx = optax.adam(1e-3)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  params = init_params(model, jax.random.PRNGKey(0), int(np.prod(shape)), k)
  weights = {"alpha_kl": 1.0, "lambda_ts": 5.0, "lambda_bal": 1.0}
  state = step.init_state(params, tx, jax.random.PRNGKey(1), weights)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  x, t = _batch(shape, k, batch)
  batch_arrays = jax.device_put({"x": x, "t": t}, NamedSharding(mesh, P("data")))
  step_fn = step.make_train_step(objectives.build("teacher_guided", model, config), tx)
  call = _chunk(step_fn, per_call, unroll)
  t0 = time.perf_counter()
  state, m = call(state, batch_arrays)
  jax.block_until_ready(m["loss"])
  compile_s = time.perf_counter() - t0
  holder = [state]

  def run(n):
    s = holder[0]
    for _ in range(n // per_call):
      s, metrics = call(s, batch_arrays)
    jax.block_until_ready(metrics["loss"])
    holder[0] = s

  sec = _time(run, window=per_call * max(1, round(20 / per_call)))
  return {"devices": jax.device_count(), "platform": jax.devices()[0].platform,
          "per_call": per_call, "compile_s": compile_s, "step_s": sec, "images_s": batch / sec}


def torch_model(model_name: str):
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  shape, k, latent, _ = MODELS[model_name]

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      if model_name == "mlp":
        d = shape[0]
        self.enc = nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.mu, self.lv = nn.Linear(256, latent), nn.Linear(256, latent)
        self.dec = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 256),
                                 nn.ReLU(), nn.Linear(256, d))
      else:
        ch = (3, 32, 64, 128, 256)
        self.enc = nn.Sequential(*[m for i in range(4) for m in
                                   (nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), nn.ReLU())],
                                 nn.Flatten())
        self.mu, self.lv = nn.Linear(256 * 4, latent), nn.Linear(256 * 4, latent)
        ups = [m for i in range(4, 1, -1) for m in
               (nn.ConvTranspose2d(ch[i], ch[i - 1], 4, 2, 1), nn.ReLU())]
        self.dec = nn.Sequential(nn.Linear(latent, 256 * 4), nn.ReLU(),
                                 nn.Unflatten(1, (256, 2, 2)), *ups,
                                 nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Flatten())
      self.head = nn.Linear(latent, k)

    def loss(self, x, t):
      inp = x if model_name == "mlp" else x.view(-1, 32, 32, 3).permute(0, 3, 1, 2)
      h = self.enc(inp)
      mu, lv = self.mu(h), self.lv(h)
      z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
      out = self.dec(z)
      if model_name == "mlp":
        rec = nn.functional.binary_cross_entropy_with_logits(out, x, reduction="sum") / len(x)
      else:
        target = inp.flatten(1)
        rec = (0.5 * ((target - torch.sigmoid(out)) / 0.1) ** 2).sum() / len(x)
      kl = 0.5 * (lv.exp() + mu ** 2 - 1 - lv).sum() / len(x)
      log_s = torch.log_softmax(self.head(z), -1)
      align = (torch.special.xlogy(t, t) - t * log_s).sum() / len(x)
      sbar = log_s.exp().mean(0)
      bal = torch.log(torch.tensor(float(k))) + torch.special.xlogy(sbar, sbar).sum()
      return rec + kl + 5.0 * align + bal

  return VAE()


def torch_run(model_name: str, batch: int, device: str = "cpu", compiled: bool = False) -> dict:
  """PyTorch's step, eager or with ``torch.compile`` (default mode) on the loss."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_flush_denormal(True)
  shape, k, _, _ = MODELS[model_name]
  model = torch_model(model_name).to(device)
  loss_fn = torch.compile(model.loss) if compiled else model.loss
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  x, t = (torch.from_numpy(a).to(device) for a in _batch(shape, k, batch))

  def run(n):
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss_fn(x, t).backward()
      opt.step()
    if device != "cpu":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  run(1)
  first_s = time.perf_counter() - t0
  run(2)
  sec = _time(run)
  result = {"step_s": sec, "images_s": batch / sec, "threads": torch.get_num_threads()}
  if compiled:
    result["compile_s"] = first_s
  return result


YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
RETAIN = "retain"  # CERTVAE_JAX_RETAIN_HOST_MEMORY=1 (certvae_jax.host_memory)


def jax_runners(name: str, a: argparse.Namespace,
                chunk: int) -> list[tuple[str, Callable[[], dict]]]:
  """One subprocess per JAX variant: devices x (1 per call, ``chunk`` per call scan /
  unrolled)."""
  variants = [(n, per_call, unroll, "")
              for n in (int(d) for d in a.devices.split(","))
              for per_call, unroll in ((1, False), (chunk, False), (chunk, True))]
  if a.ynn_off:
    variants += [(1, 1, False, YNN_OFF), (1, chunk, False, YNN_OFF)]
  if a.retain_host_memory:
    variants += [(1, 1, False, RETAIN), (1, chunk, False, RETAIN)]

  def run(n, per_call, unroll, flag):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n} "
               f"{flag if flag == YNN_OFF else ''}")
    env[host_memory.ENV] = "1" if flag == RETAIN else "0"
    out = subprocess.run([sys.executable, __file__, f"--worker={name}", f"--batch={a.batch}",
                          f"--per_call={per_call}"] + (["--unroll"] if unroll else []),
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

  runners = []
  for n, per_call, unroll, flag in variants:
    how = ("1 step per call" if per_call == 1 else
           f"{per_call or 'default'} per call, {'unrolled' if unroll else 'scan'}")
    label = f"JAX, {n} device(s), {how}" + {YNN_OFF: ", YNNPACK fusion off",
                                            RETAIN: ", freed memory retained", "": ""}[flag]
    runners.append((label, lambda v=(n, per_call, unroll, flag): run(*v)))
  return runners


def torch_runners(name: str, a: argparse.Namespace) -> list[tuple[str, Callable[[], dict]]]:
  if a.no_torch or importlib.util.find_spec("torch") is None:
    if not a.no_torch:
      print("(PyTorch not installed: pip install torch, to compare)")
    return []
  runners = [(f"PyTorch eager ({a.torch_device})",
              lambda: torch_run(name, a.batch, a.torch_device))]
  if not a.no_torch_compile:
    runners.append((f"PyTorch torch.compile ({a.torch_device})",
                    lambda: torch_run(name, a.batch, a.torch_device, compiled=True)))
  return runners


def measure(runners: list[tuple[str, Callable[[], dict]]],
            repeats: int) -> dict[str, list[dict]]:
  """Runs every variant ``repeats`` times, round-robin, so that a slow spell of a shared
  machine hits each round's variants alike."""
  runs = {label: [] for label, _ in runners}
  for _ in range(repeats):
    for label, fn in runners:
      runs[label].append(fn())
  return runs


def paired_ratio(base: list[dict] | None, runs: list[dict]) -> str:
  """Median over rounds of the base's step time over this row's, in the same round."""
  if not base:
    return "-"
  return f"{statistics.median(b['step_s'] / r['step_s'] for b, r in zip(base, runs)):.2f}x"


def default_per_call(model_name: str) -> int:
  from configs import cifar100, digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config() if model_name == "mlp" else cifar100.get_config()
  return int(config.train.steps_per_call)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="mlp,conv")
  p.add_argument("--devices", default="1")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--per_call", type=int, default=0,
                 help="steps per call for the multi-step rows (0: the config's default)")
  p.add_argument("--unroll", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--ynn_off", action="store_true",
                 help="also time JAX with XLA's YNNPACK fusion off")
  p.add_argument("--retain_host_memory", action="store_true",
                 help="also time JAX with CERTVAE_JAX_RETAIN_HOST_MEMORY=1")
  p.add_argument("--repeats", type=int, default=3,
                 help="runs of every row, interleaved; each row reports its median run")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--no-torch-compile", action="store_true")
  p.add_argument("--torch_device", default="cpu", help="cpu, or cuda on a GPU machine")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    host_memory.retain_from_env()  # before JAX starts its threads
    print(json.dumps(jax_worker(a.worker, a.batch, a.per_call, a.unroll)))
    return
  table = []
  for name in a.models.split(","):
    per_call = a.per_call or default_per_call(name)
    table.append((name, measure(jax_runners(name, a, per_call) + torch_runners(name, a),
                                a.repeats)))
  print(f"machine: {os.cpu_count()} cores; batch {a.batch}; each row: {a.repeats} runs, "
        "interleaved, each the median of 5 timed windows of about 20 steps")
  print("| model | framework | compile (s) | step (ms): median (min-max) | images/s | vs eager "
        "| vs compile |")
  print("|---|---|---|---|---|---|---|")
  for name, runs in table:
    eager = runs.get(f"PyTorch eager ({a.torch_device})")
    compiled = runs.get(f"PyTorch torch.compile ({a.torch_device})")
    for label, rs in runs.items():
      steps = sorted(r["step_s"] * 1e3 for r in rs)
      median = statistics.median(steps)
      compile_s = (f"{statistics.median(r['compile_s'] for r in rs):.1f}"
                   if "compile_s" in rs[0] else "-")
      print(f"| {name} | {label} | {compile_s} | {median:.2f} ({steps[0]:.2f}-{steps[-1]:.2f}) | "
            f"{a.batch / median * 1e3:.0f} | {paired_ratio(eager, rs)} | "
            f"{paired_ratio(compiled, rs)} |")
  print("(vs eager / vs compile: that PyTorch step's time over this row's in the same round, "
        "median over rounds; above 1 is faster)")


if __name__ == "__main__":
  main()
