"""The training loop: steps, and hooks called at fixed points.

The loop only advances the state; everything else a run does while training (the
non-finite check, progress, timing, step metrics, evaluation, checkpoints, the guard) is
a :class:`Hook`, whose methods may return an action: :class:`SetWeights`, :class:`Stop`,
:class:`Restore` or :class:`Event`. Between syncs the host only dispatches steps.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from certvae_jax.training.writers import MetricWriter, flatten

Rows = list[tuple[int, dict[str, float]]]


class TrainingDiverged(RuntimeError):
  """A non-finite loss; the last good checkpoint is kept."""


class PhaseFailed(RuntimeError):
  """An unexpected error inside a phase (a bug; its exception is the ``__cause__``).

  The message names the phase, the step it was at and the last good checkpoint that a
  rerun resumes from; nothing on disk is changed by the failure.
  """


class SetWeights(NamedTuple):
  """Replace some loss weights (by name) from the next step on."""
  weights: Mapping[str, float]


class Stop(NamedTuple):
  """End the loop after this sync."""
  reason: str = ""


class Restore(NamedTuple):
  """Continue from the checkpoint saved at ``step``; writers with a ``rewind`` drop the
  rows written past it."""
  step: int


class Event(NamedTuple):
  """Write ``fields`` as an event row (:meth:`Loop.write_event`) at ``step`` (default: the
  step the loop is at when it reaches this action, e.g. after a :class:`Restore`)."""
  fields: Mapping[str, Any]
  step: int | None = None


class Hook:
  """A no-op hook; subclasses override what they need.

  Hooks run in list order at each point; the run puts checkpointing last, so a
  checkpoint holds every change made at its step. Every method but :meth:`wants_sync`,
  :meth:`checkpoint_meta` and :meth:`on_end` may return an action or a list of them, run
  in order: :class:`SetWeights` (the new weights go into the state, so they are
  checkpointed and a restart keeps them), :class:`Stop` (after this sync; the run saves
  and summarises the state it reached), :class:`Restore` (a saved step; training
  continues from it, with its weights) or :class:`Event` (an event row). A hook may read
  ``loop.state``, write an event row (:meth:`Loop.write_event`) and reach the phase's
  checkpoints (``loop.checkpointer``).
  """

  def wants_sync(self, step: int, last: bool) -> bool:
    """Whether the loop should fetch metrics after ``step`` (``last``: the final step)."""
    del step, last
    return False

  def on_start(self, loop: "Loop") -> Any:
    """Before the first step; ``loop.resumed_meta`` holds the metadata of the checkpoint
    the state was restored from (``None`` for a fresh state)."""
    del loop

  def checkpoint_meta(self, loop: "Loop", step: int) -> Mapping[str, Any] | None:
    """JSON this hook wants saved with a checkpoint (under its own key); it comes back
    in ``loop.resumed_meta`` on resume, so a hook with state continues exactly."""
    del loop, step

  def on_sync(self, loop: "Loop", step: int, rows: Rows) -> Any:
    """At each host sync (after a step where any hook wanted one), with the fetched
    metrics of every step since the previous sync: ``rows = [(step, {name: float})]``,
    each step counted after it ran."""
    del loop, step, rows

  def on_eval(self, loop: "Loop", step: int, results: Mapping[str, Any]) -> Any:
    """After an evaluation; ``results[split]`` holds that split's certificate and
    diagnostics."""
    del loop, step, results

  def on_checkpoint(self, loop: "Loop", step: int) -> Any:
    """After a checkpoint of ``step`` is saved."""
    del loop, step

  def on_restore(self, loop: "Loop", step: int, meta: Mapping[str, Any]) -> Any:
    """After a :class:`Restore` to ``step`` (a guard's rollback), with the metadata of the
    checkpoint restored: a hook with state takes back what it saved there, so that it
    describes the trajectory training continues, not the steps abandoned."""
    del loop, step, meta

  def on_end(self, loop: "Loop") -> None:
    """When the loop returns."""
    del loop


class Loop:
  """Runs ``advance`` from ``state.step`` to ``total_steps``, calling ``hooks``.

  Args:
    state: the train state to start from (on the devices).
    advance: ``(state, step, n) -> (state, metrics)``: steps ``step .. step + n - 1``;
      ``metrics`` is one step's dict when ``n == 1``, else a list of ``n`` dicts or one
      dict of arrays stacked along a leading axis of length ``n``.
    total_steps: where to stop.
    hooks: called in order at each point (see :class:`Hook`).
    evaluate: ``(state, step) -> (results, arrays)``: the evaluation of :meth:`evaluate`.
    save: ``(step, state, extra_meta) -> None``: writes a checkpoint, with the hooks'
      :meth:`Hook.checkpoint_meta` merged into its metadata.
    restore: ``(step) -> (state, meta)``: reads one back (for :class:`Restore`).
    put_weights: ``(weights) -> weights`` placed like the state (for :class:`SetWeights`).
    writers: metric writers; :meth:`write` rows are sent to them once per step.
    name: the phase's name (``warmup``, ``full``, ``noalign_fixed``, ...), for hooks.
    steps_per_call: the most steps one call of ``advance`` may take. A call never crosses
      a step where a hook wants a sync, so hooks see the same steps whatever it is.
    resumed_meta: the metadata of the checkpoint ``state`` was restored from, or None.
    checkpointer: the phase's :class:`~certvae_jax.training.checkpoint.Checkpointer`, for hooks
      that pin or discard steps.
  """

  def __init__(self, state: Any, advance: Callable[[Any, int], tuple[Any, Any]],
               total_steps: int, hooks: Sequence[Hook],
               evaluate: Callable[[Any, int], tuple[dict, dict]] | None = None,
               save: Callable[[int, Any], None] | None = None,
               restore: Callable[[int], Any] | None = None,
               put_weights: Callable[[dict], dict] | None = None,
               writers: Iterable[MetricWriter] = (), name: str = "",
               steps_per_call: int = 1, resumed_meta: Mapping[str, Any] | None = None,
               checkpointer: Any = None):
    self.name = name
    self.steps_per_call = max(1, int(steps_per_call))
    self.state = state
    self.step = int(state.step)
    self.start_step = self.step
    self.total_steps = int(total_steps)
    self.hooks = list(hooks)
    self.writers = list(writers)
    self.side_seconds = {"eval": 0.0, "checkpoint": 0.0}
    self.last_eval: tuple[int, dict, dict] | None = None
    self.last_saved: int | None = None
    self.stop_reason: str | None = None
    self.resumed_meta = None if resumed_meta is None else dict(resumed_meta)
    self.checkpointer = checkpointer
    self.events_written = 0
    self._advance, self._evaluate, self._save = advance, evaluate, save
    self._restore, self._put_weights = restore, put_weights
    self._pending: list[tuple[int, int, Any]] = []  # (first step run, steps, metrics)
    self._row: dict[str, float] = {}

  def run(self) -> Any:
    """Steps until ``total_steps`` or a :class:`Stop`; returns the final state."""
    for hook in self.hooks:
      self._act(hook.on_start(self))
    while self.step < self.total_steps and self.stop_reason is None:
      n, sync = self._next_call()
      self.state, metrics = self._advance(self.state, self.step, n)
      self._pending.append((self.step + 1, n, metrics))
      self.step += n
      if sync:
        self._sync()
    self.write_row()
    for hook in self.hooks:
      hook.on_end(self)
    return self.state

  @property
  def finishing(self) -> bool:
    """Whether this sync is the loop's last (the last step, or a hook asked to stop)."""
    return self.step >= self.total_steps or self.stop_reason is not None

  def _next_call(self) -> tuple[int, bool]:
    """How many steps the next call takes, and whether a sync follows it."""
    for n in range(1, self.steps_per_call + 1):
      step = self.step + n
      last = step >= self.total_steps
      # Every hook is asked (no short-circuit): a hook may count the steps it is shown.
      if any([h.wants_sync(step, last) for h in self.hooks]) or last:
        return n, True
    return self.steps_per_call, False

  def _sync(self) -> None:
    values = jax.device_get([m for _, _, m in self._pending])
    rows = []
    for (first, n, _), metrics in zip(self._pending, values):
      if n == 1:
        metrics = [metrics]
      elif isinstance(metrics, dict):  # stacked along a leading axis of length n
        metrics = [{k: v[i] for k, v in metrics.items()} for i in range(n)]
      rows.extend((first + i, {k: float(np.asarray(v)) for k, v in m.items()})
                  for i, m in enumerate(metrics))
    self._pending.clear()
    step = self.step
    for hook in self.hooks:
      self._act(hook.on_sync(self, step, rows))
      if self.step != step:  # restored: this sync is over
        return
    self.write_row()

  # -- what hooks call ------------------------------------------------------

  def evaluate(self) -> dict[str, Any]:
    """Evaluates the current state, tells every hook, and writes the results."""
    tick = time.perf_counter()
    results, arrays = self._evaluate(self.state, self.step)
    self.side_seconds["eval"] += time.perf_counter() - tick
    self.last_eval = (self.step, results, arrays)
    self.write(results)
    for hook in self.hooks:
      self._act(hook.on_eval(self, self.step, results))
    return results

  def save(self) -> None:
    """Writes the buffered scalars, then a checkpoint of the current state."""
    self.write_row()
    extra: dict[str, Any] = {}
    for hook in self.hooks:
      extra.update(hook.checkpoint_meta(self, self.step) or {})
    tick = time.perf_counter()
    self._save(self.step, self.state, extra)
    self.side_seconds["checkpoint"] += time.perf_counter() - tick
    self.last_saved = self.step
    for hook in self.hooks:
      self._act(hook.on_checkpoint(self, self.step))

  def write(self, tree: Mapping[str, Any], prefix: str = "") -> None:
    """Buffers scalars for this step's row (see :func:`certvae_jax.training.writers.flatten`)."""
    self._row.update(flatten(tree, prefix))

  def write_event(self, event: Mapping[str, Any], step: int | None = None) -> None:
    """Writes one event (``{"event": kind, ...}``) as a row of its own, at ``step`` (default:
    the current step).

    Writers with a ``write_event(step, event)`` method (``metrics.jsonl``) get it whole;
    the others get its numbers as scalars under ``<kind>/``.
    """
    at = self.step if step is None else int(step)
    for writer in self.writers:
      if hasattr(writer, "write_event"):
        writer.write_event(at, event)
      else:
        writer.write_scalars(at, flatten(event, str(event["event"])))
      writer.flush()
    self.events_written += 1

  def write_row(self) -> None:
    """Sends the buffered scalars to the writers as one row of the current step."""
    if self._row:
      for writer in self.writers:
        writer.write_scalars(self.step, self._row)
        writer.flush()
      self._row = {}

  # -- actions --------------------------------------------------------------

  def _act(self, action: Any) -> None:
    if action is None:
      return
    if isinstance(action, (list, tuple)) and not isinstance(action, (SetWeights, Stop,
                                                                      Restore, Event)):
      for a in action:
        self._act(a)
    elif isinstance(action, SetWeights):
      self._set_weights(action.weights)
    elif isinstance(action, Stop):
      self.stop_reason = action.reason or "stopped by a hook"
    elif isinstance(action, Event):
      self.write_event(action.fields, action.step)
    elif isinstance(action, Restore):
      self._row = {}
      self._pending.clear()
      self.state, meta = self._restore(int(action.step))
      self.step = int(self.state.step)
      for writer in self.writers:
        if hasattr(writer, "rewind"):  # optional: see certvae_jax.training.writers
          writer.rewind(self.step)
      for hook in self.hooks:
        self._act(hook.on_restore(self, self.step, dict(meta)))
    else:
      raise TypeError(f"hook action: expected SetWeights, Stop, Restore or Event, got "
                      f"{action!r}")

  def _set_weights(self, new: Mapping[str, float]) -> None:
    unknown = sorted(set(new) - set(self.state.weights))
    if unknown:
      raise ValueError(f"SetWeights: unknown weights {unknown}; this objective has "
                       f"{sorted(self.state.weights)}")
    weights = dict(self.state.weights)
    weights.update({k: np.float32(v) for k, v in new.items()})
    self.state = self.state.replace(weights=self._put_weights(weights))
