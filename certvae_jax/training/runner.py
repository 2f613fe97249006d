"""One seed's run: warm-up -> teacher -> the phase of a mode (paper 1, section 3).

:class:`Runner` decides which phase runs from which state (fresh, the warm-up's
encoder, a finished phase's final checkpoint) and restores or initialises it; the loop
of a phase and its summary are built by :mod:`~certvae_jax.training.phase_loop`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from certvae_jax import data as data_lib, distributed, files
from certvae_jax.evaluation.rescue_diagnostics import rescue_diagnostics
from certvae_jax.rng_streams import data_seed
from certvae_jax.teachers.kinds import Teacher
from certvae_jax.training import extensions, modes, phase_loop, preemption
from certvae_jax.training.checkpoint import check_compatible
from certvae_jax.training.context import make_context
from certvae_jax.training.engine import Engine, transfer_params
from certvae_jax.training.loop import Hook, PhaseFailed, TrainingDiverged
from certvae_jax.training.phase_loop import Phase
from certvae_jax.training.rundir import RunDir, fingerprint
from certvae_jax.training.teacher_stage import TeacherStage
from certvae_jax.training.writers import MetricWriter, truncate_jsonl

__all__ = ["Runner"]

_log = logging.getLogger(__name__)


class Runner:
  """Runs the phases of one seed in one workdir.

  Args:
    config: the run config.
    workdir: the seed's run directory.
    overwrite: clear a workdir made by an incompatible run instead of refusing it.
    hooks: extra loop hooks (after the config's ``train.hooks``), for every phase.
    writers: extra metric writers, for every phase (process 0 only).
    shared_teacher: ``(directory, seed)`` of another seed's teacher artifact, used as it
      is instead of this seed's own (paper 1's fixed-teacher control, appendix F.2).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
               hooks: Sequence[Hook] = (), writers: Sequence[MetricWriter] = (),
               shared_teacher: tuple[str, int] | None = None):
    self.ctx = make_context(config)
    self.config = config
    self.dir = RunDir(workdir, overwrite)
    self.engine = Engine(config, self.ctx.data, self.ctx.mesh)
    self.teachers = TeacherStage(config, self.ctx.data, self.dir, self.engine,
                                 self._warmup_encoder, shared_teacher)
    self.parts = phase_loop.RunParts(config, self.ctx.data, self.engine, self.teachers,
                                     self.dir, tuple(hooks), tuple(writers))

  @property
  def workdir(self) -> str:
    return self.dir.root

  @property
  def teacher_info(self) -> dict[str, Any] | None:
    return self.teachers.info

  def ensure_teacher(self) -> Teacher:
    """The seed's teacher, made when missing (see :mod:`~certvae_jax.training.teacher_stage`)."""
    return self.dir.guarded(self.teachers.ensure, on_clear=self.teachers.forget)

  @property
  def num_classes(self) -> int:
    """K of the seed's teacher (loads or makes the teacher)."""
    return self.ensure_teacher().num_classes

  def teacher_targets(self, target: str = "live") -> tuple[np.ndarray, np.ndarray]:
    """The teacher's rows on the train and test splits (making the teacher if needed)."""
    self.ensure_teacher()
    return self.teachers.split_targets(target, self.num_classes)

  def restore(self, ckpt, k: int, step: int | None = None, mode: str = "full"):
    """``(state, meta)`` from a checkpoint of ``mode`` (its objective's weights, and those
    its phase extensions added when they saved it, such as the guard's), replicated."""
    names = self._weight_names(mode)
    saved = ckpt.read_meta(step) or {}
    names += tuple(name for name in extensions.weight_names() if name in saved)
    m = modes.get(mode)
    return self.engine.restore(ckpt, k, names, step, m.objective,
                               extensions.plans(self.config, m))

  def fresh_state(self, k: int, data_code: int, mode: str = "warmup"):
    """A new state of ``mode`` with parameters from ``config.seed`` (see :class:`Engine`)."""
    m = modes.get(mode)
    return self.engine.fresh_state(k, data_code, m.weights(self.config), m.objective)

  def run_warmup(self) -> dict[str, Any]:
    """Warm-up VAE; resumes or returns its summary when already complete."""
    return self.dir.guarded(self._run_warmup, on_clear=self.teachers.forget)

  def run_mode(self, mode: str, target: str = "live") -> dict[str, Any]:
    """Runs ``mode`` (after warm-up and teacher search when needed); returns its summary.

    Holds the workdir lock throughout: a second run on the same workdir is refused.
    """
    return self.dir.guarded(lambda: self._run_mode(mode, target), on_clear=self.teachers.forget)

  # -- phases ------------------------------------------------------------------------

  def _run_warmup(self) -> dict[str, Any]:
    mode, k = modes.get("warmup"), self.ctx.num_classes
    weights = mode.weights(self.config)
    meta = self._warmup_fingerprint()
    phase = Phase("warmup", mode, "none", mode.steps(self.config), weights,
                  data_seed(self.config.seed, mode.data_code), meta)
    return self._run_phase(phase, k, lambda: self.engine.fresh_state(k, mode.data_code,
                                                                     weights))

  def _warmup_encoder(self):
    """Runs (or finds) the warm-up; its final encoder parameters, for the teacher."""
    self.run_warmup()
    with self.dir.checkpoints("warmup") as ckpt:
      state, _ = self._restore_checked(ckpt, self._warmup_fingerprint(),
                                       "the warm-up checkpoint", "warmup",
                                       self.config.warmup.steps)
    return state.params["encoder"]

  def _run_mode(self, name: str, target: str) -> dict[str, Any]:
    mode = modes.get(name)
    modes.check_target(target)
    if name == "warmup":
      return self.run_warmup()
    mode.check(self.config)
    if mode.init == "continue" and not mode.run_source:
      self._require_finished_source(mode, target)
    teacher = self.ensure_teacher()
    return self._run(mode, target, teacher.num_classes, teacher.info)

  def _warmup_fingerprint(self) -> dict[str, Any]:
    return fingerprint(self.config, "warmup", {"warmup.alpha_kl": self.config.warmup.alpha_kl})

  def _variant_meta(self, info: dict[str, Any]) -> dict[str, Any]:
    t = self.config.train
    return {**fingerprint(self.config, "variant", {
        "train.alpha_kl": t.alpha_kl, "train.lambda_bal": t.lambda_bal,
        "train.align_on_mean": t.align_on_mean, "train.init": t.init}),
            "teacher_id": info["teacher_id"]}

  def _run(self, mode: modes.Mode, target: str, k: int, info: dict[str, Any]):
    base_meta = self._variant_meta(info)
    plans = extensions.plans(self.config, mode)
    weights = mode.weights(self.config)
    if mode.target_weights is not None:
      weights.update(mode.target_weights(self.config, self.teachers.split_targets(target, k)[0]))
    for plan in plans:
      weights.update(plan.weights())
    total, extra = mode.steps(self.config), None
    if mode.init == "continue":
      state, start = self._final_state(mode.source, target, k, base_meta)
      total += start
      if weights.get("lambda_ts", 0.0) > 0:
        # Computed only if the phase runs (a finished rescue returns its summary as saved).
        extra = lambda: {"rescue_diagnostics": self._rescue_diagnostics(  # noqa: E731
            mode, state, target, k)}
      init_fn = lambda: state.replace(weights=self.engine.put_weights(weights))  # noqa: E731
    elif mode.init == "params":
      if mode.run_source:
        self._run(modes.get(mode.source), target, k, info)
      init_fn = lambda: self._from_final_params(mode, target, k, weights)  # noqa: E731
    elif mode.init == "fresh":
      init_fn = lambda: self.engine.fresh_state(  # noqa: E731
          k, mode.data_code, weights, mode.objective)
    else:
      init_fn = lambda: self._variant_init(k, mode, weights)  # noqa: E731
    phase = Phase(phase_loop.phase_name(self.config, mode.name, target), mode, target,
                  total, weights, data_seed(self.config.seed, mode.data_code),
                  dict(base_meta, **weights, **mode.meta(self.config),
                       **{k: v for plan in plans for k, v in plan.meta().items()}), plans, extra)
    return self._run_phase(phase, k, lambda: self.engine.with_plan_params(init_fn(), plans, k))

  def _rescue_diagnostics(self, mode: modes.Mode, state, target: str, k: int):
    """Appendix H's diagnostics at the state a rescue starts from, on the first
    ``eval.batch_size`` training rows (see :mod:`certvae_jax.evaluation.rescue_diagnostics`)."""
    rows = min(len(self.ctx.data.x_train), int(self.config.eval.batch_size))
    x = data_lib.to_unit(self.ctx.data.x_train[:rows])
    t = self.teachers.split_targets(target, k)[0][:rows]
    # The witness path alone (encoder and head): the diagnostics take a forward-mode
    # derivative, which the conv decoder's fast upsample does not have.
    witness = self.engine.objective(mode.objective, k).witness_logits
    logits = lambda p, xb: witness(p, xb, t)  # noqa: E731
    found = rescue_diagnostics(logits, jax.device_get(state.params), x, t)
    _log.info("%s: rescue diagnostics at step %d: %s", mode.name, int(state.step),
              ", ".join(f"{key}={value:.4g}" for key, value in found.items()))
    return found

  def _source_phase(self, source: str, target: str) -> str:
    return phase_loop.phase_name(self.config, source, target)

  def _require_finished_source(self, mode: modes.Mode, target: str) -> None:
    name = self._source_phase(mode.source, target)
    if not self.dir.has_checkpoints(name):
      flag = f" --target={target}" if target == "fixed" else ""
      raise ValueError(
          f"mode: {mode.name} restarts from the final {mode.source} checkpoint, but "
          f"{os.path.join(self.dir.phase(name), 'checkpoints')!r} has none; run "
          f"--mode={mode.source}{flag} first")

  def _final_state(self, source: str, target: str, k: int, meta: dict[str, Any]):
    """The final state of a finished phase of mode ``source`` (exact), and its step."""
    name = self._source_phase(source, target)
    summary = self.dir.read_summary(name)
    if summary is None:
      raise ValueError(f"mode: the {source} run in {self.dir.phase(name)!r} has not "
                       f"finished; run --mode={source} to completion first")
    final_step = int(summary["step"])
    with self.dir.checkpoints(name) as ckpt:
      if final_step not in ckpt.all_steps():
        raise ValueError(f"mode: the {source} checkpoint at its final step {final_step} is "
                         f"missing from {self.dir.phase(name)!r}")
      state, _ = self._restore_checked(ckpt, meta, f"the {source} checkpoint in "
                                       f"{self.dir.phase(name)!r}", source, final_step, k)
    return state, final_step

  def _restore_checked(self, ckpt, expected: dict[str, Any], where: str, mode: str,
                       step: int | None = None, k: int | None = None,
                       weight_names: Sequence[str] | None = None,
                       plans: tuple[extensions.PhasePlan, ...] = ()):
    """``(state, meta)`` of ``mode`` from ``ckpt``, after its metadata is checked against
    ``expected`` (so that a checkpoint of another config is refused, never mistaken for a
    damaged one). ``weight_names``: the state's weights, when not the mode's alone;
    ``plans``: the extension plans of the phase that saved it."""
    saved = ckpt.read_meta(step)
    if saved is not None:
      check_compatible(saved, expected, where)
    state, saved = self.engine.restore(ckpt, self.ctx.num_classes if k is None else k,
                                       tuple(weight_names or self._weight_names(mode)), step,
                                       modes.get(mode).objective, plans)
    check_compatible(saved, expected, where)
    return state, saved

  def _weight_names(self, mode_name: str) -> tuple[str, ...]:
    mode = modes.get(mode_name)
    return tuple(mode.weights(self.config))

  def _from_final_params(self, mode: modes.Mode, target: str, k: int, weights):
    """A new state starting from the parameters of ``mode.source``'s latest checkpoint."""
    with self.dir.checkpoints(self._source_phase(mode.source, target)) as ckpt:
      done, _ = self.engine.restore(ckpt, k, self._weight_names(mode.source),
                                    objective=modes.get(mode.source).objective)
    fresh = self.engine.fresh_state(k, mode.data_code, weights, mode.objective)
    return fresh.replace(params=done.params, opt_state=self.engine.optimizer_state(done.params))

  def _variant_init(self, k: int, mode: modes.Mode, weights):
    state = self.engine.fresh_state(k, mode.data_code, weights, mode.objective)
    if self.config.train.init == "fresh":
      return state
    self.run_warmup()  # done already for a GMM teacher; a teacher given by rows needs it now
    with self.dir.checkpoints("warmup") as ckpt:
      warm, _ = self.engine.restore(ckpt, self.ctx.num_classes, self._weight_names("warmup"),
                                    self.config.warmup.steps)
    params = transfer_params(state.params, warm.params)
    return state.replace(params=params, opt_state=self.engine.optimizer_state(params))

  # -- one phase: restore or init, loop, summarise ----------------------------------

  def _run_phase(self, phase: Phase, k: int, init_fn: Callable[[], Any]) -> dict[str, Any]:
    os.makedirs(self.dir.phase(phase.name), exist_ok=True)
    distributed.barrier(f"{phase.name}-start")  # all see the same files below
    at: dict[str, Any] = {"step": None, "loop": None}  # where a failure leaves the phase
    try:
      summary = self._train_phase(phase, k, init_fn, at)
    except (ValueError, OSError, TrainingDiverged, PhaseFailed, preemption.Preempted):
      raise  # reported as they are: one line each
    except Exception as e:  # a bug: say where it left the run, keep the traceback
      loop = at["loop"]
      step = loop.step if loop is not None else at["step"]
      source = (self._source_phase(phase.mode.source, phase.target)
                if phase.mode.init == "continue" else None)
      raise PhaseFailed(phase_loop.failure_message(self.dir, phase.name, e, step,
                                                   source)) from e
    distributed.barrier(f"{phase.name}-done")
    return summary

  def _train_phase(self, phase: Phase, k: int, init_fn: Callable[[], Any],
                   at: dict[str, Any]) -> dict[str, Any]:
    """Restores or initialises the state, runs the loop and writes the summary; records
    in ``at`` the step and the loop it reached. SIGTERM or SIGINT meanwhile saves the step
    reached and raises :class:`~certvae_jax.training.preemption.Preempted`."""
    with preemption.watch() as notice:
      summary = self._train_watched(phase, k, init_fn, at, notice)
    if notice.signum is not None:  # came after the last step: the phase is done and saved
      raise preemption.Preempted(phase.name, int(summary["step"]), notice.signum)
    return summary

  def _train_watched(self, phase: Phase, k: int, init_fn: Callable[[], Any],
                     at: dict[str, Any], notice: preemption.Notice) -> dict[str, Any]:
    pdir, main = self.dir.phase(phase.name), self.dir.main
    metrics_path = self.dir.metrics_path(phase.name)
    meta = dict(phase.meta, phase=phase.name, data_seed=phase.data_seed)
    resumed = None
    with self.dir.checkpoints(phase.name) as ckpt:
      if ckpt.latest_step() is not None:
        state, resumed = self._restore_checked(ckpt, {key: meta[key] for key in phase.meta},
                                               f"{pdir!r}", phase.mode.name, k=k,
                                               weight_names=tuple(phase.weights),
                                               plans=phase.plans)
        step = int(state.step)
        if step > phase.total_steps:
          raise ValueError(f"{phase.name}: the checkpoint is at step {step}, beyond the "
                           f"requested {phase.total_steps} steps")
        summary = self.dir.read_summary(phase.name) if step == phase.total_steps else None
        if summary is not None:  # finished: nothing to redo, nothing to rewrite
          return summary
        kept = step if step < phase.total_steps else step - 1  # a final row is redone
        if main:  # rows after the checkpoint are written again
          truncate_jsonl(metrics_path, kept)
        if step < phase.total_steps:
          _log.info("%s: resuming from step %d", phase.name, step)
      else:
        state = init_fn()
        if main and os.path.exists(metrics_path):
          os.remove(metrics_path)
      at["step"] = int(state.step)
      extra = phase.extra() if phase.extra is not None else {}
      built = phase_loop.build(self.parts, phase, k, state, ckpt, meta, resumed,
                               preemption.PreemptionHook(notice))
      loop = at["loop"] = built.loop
      if resumed is not None:  # the other writers' rows past it (metrics.jsonl's: above)
        for writer in loop.writers:
          if hasattr(writer, "rewind"):
            writer.rewind(kept)
      try:
        state = loop.run()
        if loop.last_eval is None or loop.last_eval[0] != int(state.step):
          loop.evaluate()  # resumed at the last step: the summary's evaluation is redone
          loop.write_row()
      finally:
        for writer in loop.writers:
          writer.close()
    summary = dict(phase_loop.summary(self.parts, phase, state, built), **extra)
    summary["timing"] = built.timing.result(loop, self.config.train.batch_size, self.ctx.mesh)
    if main:
      files.write_json(self.dir.summary_path(phase.name), summary)
    return summary
