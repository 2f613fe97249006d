"""The hooks every run uses, and a registry for more.

A run's hooks, in order: :class:`FiniteCheck`, :class:`Timing`, :class:`Progress`,
:class:`StepMetrics`, the user's hooks (``config.train.hooks`` by name, or
``train.train(..., hooks=[...])``), :class:`PeriodicEvaluation`,
:class:`PeriodicCheckpoint`. A user's hook therefore sees each evaluation and acts
before the checkpoint of that step is written. Register one for the config with::

    hooks.register("my_guard", lambda config: MyGuard(config.eval.tau))
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import ml_collections

from certvae_jax import distributed, plugins
from certvae_jax.training.loop import Hook, Loop, Rows, TrainingDiverged


class FiniteCheck(Hook):
  """Stops the run on the first non-finite step metric; checked before anything is saved."""

  def __init__(self, phase: str):
    self.phase = phase

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    for row_step, metrics in rows:
      bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
      if bad:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        raise TrainingDiverged(
            f"{self.phase}: non-finite {', '.join(bad)} at step {row_step} ({terms}); "
            "stopped, the last good checkpoint is kept. Lower train.learning_rate, check "
            "the data, or set train.skip_nonfinite=True to skip such batches.")


class StepMetrics(Hook):
  """Writes the training step's scalars (``train_step/...``) every ``every`` steps and
  at every other sync."""

  def __init__(self, every: int):
    self.every = every

  def wants_sync(self, step: int, last: bool) -> bool:
    return step % self.every == 0

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    loop.write({"train_step": rows[-1][1]})


class Periodic(Hook):
  """Calls ``action(loop)`` every ``every`` steps and when the loop finishes."""

  def __init__(self, every: int, action: Callable[[Loop], Any]):
    self.every, self.action = every, action

  def wants_sync(self, step: int, last: bool) -> bool:
    return step % self.every == 0 or last

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    if step % self.every == 0 or loop.finishing:
      self.action(loop)


class PeriodicEvaluation(Periodic):
  """Evaluates every ``every`` steps and when the loop finishes (the summary's evaluation)."""

  def __init__(self, every: int):
    super().__init__(every, Loop.evaluate)


class PeriodicCheckpoint(Periodic):
  """Saves every ``every`` steps and when the loop finishes."""

  def __init__(self, every: int):
    super().__init__(every, Loop.save)


class Progress(Hook):
  """A terminal progress bar (step, loss, live margin, event rows such as a guard's
  interventions); silent when disabled or not a TTY."""

  def __init__(self, name: str, start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    self._bar = tqdm(total=total, initial=start, desc=name, dynamic_ncols=True, leave=False,
                     disable=None if enabled else True)
    self._loss, self._margin, self._events = float("nan"), float("nan"), 0

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    self._loss = rows[-1][1]["loss"]
    self._events = loop.events_written
    self._bar.update(step - self._bar.n)
    self._postfix()

  def on_eval(self, loop: Loop, step: int, results) -> None:
    self._margin = results["train"]["margin"]
    self._postfix()

  def _postfix(self) -> None:
    shown = {"loss": f"{self._loss:.2f}", "G_tau": f"{self._margin:+.3f}"}
    if self._events:  # a training guard's interventions (certvae_jax.guard)
      shown["events"] = str(self._events)
    self._bar.set_postfix(**shown)

  def on_end(self, loop: Loop) -> None:
    self._bar.close()


class Timing(Hook):
  """The summary's ``timing``: wall time and training throughput of this invocation.

  ``steps_per_s`` is training alone, from the first to the last host sync (so without
  the first step's compilation), evaluations and checkpoints left out; None when fewer
  than two syncs happened. ``peak_device_memory_bytes`` is the largest peak over this
  process's devices where the backend reports it (GPU, TPU), else None.
  """

  def __init__(self):
    self._start = time.perf_counter()
    self._syncs: list[tuple[int, float]] = []

  def on_sync(self, loop: Loop, step: int, rows: Rows) -> None:
    # Evaluations and saves start right after a sync, so no queued step is billed to them.
    self._syncs.append((step, time.perf_counter() - sum(loop.side_seconds.values())))

  def result(self, loop: Loop, batch_size: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
    syncs, rate = self._syncs, None
    if len(syncs) >= 2 and syncs[-1][1] > syncs[0][1]:
      rate = (syncs[-1][0] - syncs[0][0]) / (syncs[-1][1] - syncs[0][1])
    peaks = [int(s["peak_bytes_in_use"]) for s in map(distributed.memory_stats,
                                                      jax.local_devices())
             if "peak_bytes_in_use" in s]
    return {"steps": loop.step - loop.start_step, "seconds": time.perf_counter() - self._start,
            "eval_seconds": loop.side_seconds["eval"],
            "checkpoint_seconds": loop.side_seconds["checkpoint"], "steps_per_s": rate,
            "examples_per_s": None if rate is None else rate * batch_size,
            "platform": mesh.devices.flat[0].platform, "devices": int(mesh.size),
            "peak_device_memory_bytes": max(peaks) if peaks else None}


HookFactory = Callable[[ml_collections.ConfigDict], Hook]
_REGISTRY = plugins.Registry("config.train.hooks", "hook")


def register(name: str, factory: HookFactory) -> None:
  """Registers ``factory(config) -> Hook`` for ``config.train.hooks``."""
  _REGISTRY.register(name, factory)


def check_names(names: Any) -> None:
  """Raises ``ValueError`` unless every name is registered or an import path that loads."""
  _REGISTRY.check(names)


def create(names: Any, config: ml_collections.ConfigDict) -> list[Hook]:
  """The hooks named in ``config.train.hooks``.

  Each name is registered (:func:`register`) or an import path ``package.module:Name``
  of a hook class or factory, called with the config.

  Raises:
    ValueError: an unknown name or a path that does not load.
  """
  return _REGISTRY.create(names, config)
