"""One phase of a run: its loop (hooks, writers, extensions) and its summary.

:class:`certvae_jax.training.runner.Runner` decides *which* phase runs from which
state; this module builds the :class:`~certvae_jax.training.loop.Loop` that trains it
and the summary written when it ends. The phase's extension plans
(:mod:`~certvae_jax.training.extensions`, such as the guard) may hold training rows
out, and their hooks run before the evaluation and the checkpoint of each step.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from certvae_jax import certificate, files
from certvae_jax.evaluation.splits import evaluate_splits, final_analyses
from certvae_jax.training import extensions, hooks as hooks_lib, modes, writers as writers_lib
from certvae_jax.training.loop import Loop


class Phase(NamedTuple):
  """What one run of the loop needs."""
  name: str                     # directory name: warmup, full, noalign_fixed, ...
  mode: modes.Mode
  target: str                   # 'live', 'fixed', or 'none' (warm-up)
  total_steps: int
  weights: dict[str, float]     # the mode's base weights (and its extensions')
  data_seed: int
  meta: dict[str, Any]          # must match on restore
  plans: tuple[extensions.PhasePlan, ...] = ()  # the extensions acting on the phase
  # () -> entries added to the summary, called once the phase is known to run
  # (a rescue's diagnostics at its starting state).
  extra: Callable[[], dict[str, Any]] | None = None


class RunParts(NamedTuple):
  """What a phase's loop and summary read of the run (one seed's workdir): typed, so that
  this module depends on these parts, not on
  :class:`certvae_jax.training.runner.Runner`."""
  config: Any                   # the run's ml_collections.ConfigDict
  data: Any                     # certvae_jax.data.Dataset
  engine: Any                   # certvae_jax.training.engine.Engine
  teachers: Any                 # certvae_jax.training.teacher_stage.TeacherStage
  dir: Any                      # certvae_jax.training.rundir.RunDir
  hooks: tuple[Any, ...] = ()   # extra loop hooks, after the config's train.hooks
  writers: tuple[Any, ...] = ()  # extra metric writers (process 0 only)


def phase_name(config, mode_name: str, target: str = "live") -> str:
  """The directory of ``mode_name``'s phase under ``config``: the tags of the mode and of
  its extensions (``full_guard_raise``, ``rescue_sf200``) keep each setting apart."""
  mode = modes.get(mode_name)
  tags = (mode.tag(config), *(plan.tag for plan in extensions.plans(config, mode)))
  tag = "_".join(t for t in tags if t)
  return modes.phase_dir(mode_name, target, tag)


class PhaseLoop(NamedTuple):
  """A built loop and its timing hook (the summary reads it)."""
  loop: Loop
  timing: hooks_lib.Timing


def extension_hooks(run: RunParts, phase: Phase, k: int, t_train: np.ndarray):
  """``(training rows or None for all, hooks)`` of the phase's extension plans."""
  if not phase.plans:
    return None, []
  inputs = extensions.PhaseInputs(
      run.config, run.data.x_train, t_train,
      run.engine.objective(phase.mode.objective, k).witness_logits,
      run.engine.batch_sharding, phase.total_steps - phase.mode.steps(run.config),
      phase.weights)
  rows, hooks = None, []
  for plan in phase.plans:
    held, more = plan.hooks(inputs)
    if held is not None:
      rows = held if rows is None else np.intersect1d(rows, held)
    hooks += more
  return rows, hooks


def build(run: RunParts, phase: Phase, k: int, state, ckpt, meta: dict[str, Any],
          resumed_meta: dict[str, Any] | None, last_hook: Any = None) -> PhaseLoop:
  """The loop of one phase, with the run's hooks and writers; ``last_hook`` (the
  preemption hook) runs after the checkpoint hook."""
  cfg, engine = run.config, run.engine
  t_train, t_test = run.teachers.split_targets(phase.target, k)
  phase.mode.check_targets(t_train)
  teacher_fn = run.teachers.function  # T(x); None for a teacher given by its rows
  live = phase.target == "live" and teacher_fn is not None
  rows, plan_hooks = extension_hooks(run, phase, k, t_train)
  step_fn = engine.train_step(phase.mode.objective, k, phase.mode.schedule(cfg), phase.plans)
  advance = engine.stepper(phase.name, step_fn, phase.data_seed,
                           teacher_fn if live else None, t_train, k, rows)
  eval_step = engine.eval_step(phase.mode.objective, k, phase.plans)
  objective = extensions.transform(engine.objective(phase.mode.objective, k),
                                   extensions.changing_evaluation(phase.plans))
  d = run.data
  splits = (("train", d.x_train, t_train), ("test", d.x_test, t_test))
  labels = {"train": d.y_train, "test": d.y_test}
  # T(x_hat) needs a teacher that is a function of any input, not one given by its rows.
  # An objective with parameters of its own (a VQ codebook) decodes its own code, not
  # dec(mu), which the check assumes.
  probes = ([engine.reconstruction_check(k, teacher_fn)]
            if cfg.eval.reconstruction_check and teacher_fn is not None
            and objective.init_params is None else [])

  def evaluate(st, step):
    del step
    return evaluate_splits(eval_step, st.params, splits, cfg.eval, engine.batch_sharding,
                           labels if loop.finishing else None, probes, objective.summarize)

  def restore(step):  # the writers drop the rows past ``step`` (Loop calls their rewind)
    return engine.restore(ckpt, k, tuple(phase.weights), step, phase.mode.objective,
                          phase.plans)

  main = run.dir.main
  timing = hooks_lib.Timing()
  hooks = [hooks_lib.FiniteCheck(phase.name), timing,
           hooks_lib.Progress(phase.name, int(state.step), phase.total_steps,
                              cfg.train.progress and main),
           hooks_lib.StepMetrics(cfg.train.log_every), *plan_hooks,
           *hooks_lib.create(cfg.train.hooks, cfg), *run.hooks,
           hooks_lib.PeriodicEvaluation(cfg.eval.every),
           hooks_lib.PeriodicCheckpoint(cfg.train.checkpoint_every),
           *([last_hook] if last_hook is not None else [])]
  writers = ([*writers_lib.create(writers_lib.run_writer_names(cfg),
                                  run.dir.phase(phase.name)), *run.writers]
             if main else [])
  loop = Loop(jax.device_put(state, engine.replicated), advance, phase.total_steps, hooks,
              evaluate=evaluate, save=lambda step, st, extra: ckpt.save(step, st,
                                                                        dict(meta, **extra)),
              restore=restore, put_weights=engine.put_weights, writers=writers,
              name=phase.name, steps_per_call=cfg.train.steps_per_call,
              resumed_meta=resumed_meta, checkpointer=ckpt)
  return PhaseLoop(loop, timing)


def summary(run: RunParts, phase: Phase, state, built: PhaseLoop) -> dict[str, Any]:
  """The phase's summary: its last evaluation, the final analyses, the extensions' parts."""
  _, splits, arrays = built.loop.last_eval
  if run.dir.main:
    predictions = {f"{s}_{key}": arrays[s][key] for s in arrays
                   for key in ("teacher", "witness", "mu")}
    files.atomic_write(os.path.join(run.dir.phase(phase.name), "predictions.npz"),
                       lambda fh: np.savez(fh, **predictions))
  info = run.teachers.info or {}
  collapse = final_analyses(splits, arrays, run.config.eval, phase.mode.needs_teacher,
                            property_groups(run.teachers.function))
  out = {"mode": phase.mode.name, "target": phase.target, "step": int(state.step),
         "seed": int(run.config.seed), "dataset": run.data.name,
         "stress_case": bool(info.get("stress_case", False)),
         "teacher_id": info.get("teacher_id"),
         # The shortest decimals that are these float32 values: 0.1, not 0.10000000149.
         "weights": {k: float(str(np.float32(v)))
                     for k, v in jax.device_get(state.weights).items()},
         "skipped_batches": int(state.skipped), "collapse": collapse,
         "train": splits["train"], "test": splits["test"]}
  out["hint"] = uncertified_hint(out, info)
  for plan in phase.plans:
    out.update(plan.summary())
  return out


def uncertified_hint(summary: dict[str, Any], teacher_info: dict[str, Any]) -> str | None:
  """Why an aligning phase likely ended uncertified on its test split, and what to try,
  from what the run measured; None when it is certified or does not align."""
  test, weights = summary["test"], summary["weights"]
  if test.get("certified", True) or not weights.get("lambda_ts"):
    return None
  if not test["teacher_mi"] > test["tau"]:
    return (f"the teacher carries I_T={test['teacher_mi']:.3f} <= tau={test['tau']:g}: no "
            "witness can be certified against it; choose another teacher")
  if teacher_info.get("stress_case"):
    why = "no teacher candidate passed the QC thresholds (a stress case)"
  elif test.get("active_units") == 0:
    why = ("the code collapsed to the prior (0 active units): the KL term won "
           f"(alpha_KL={weights.get('alpha_kl', 0):g} against lambda_TS={weights['lambda_ts']:g})")
  elif summary["train"].get("certified"):
    why = "certified on the training split only: the witness does not generalise"
  else:
    why = "the witness did not beat the best constant by tau"
  return (f"{why}; try the guard (--config.guard.policy=raise), a larger train.lambda_ts or a "
          "smaller train.alpha_kl")


def property_groups(teacher_fn: Any) -> dict[int, np.ndarray] | None:
  """The coarser properties a GMM teacher offers (paper 1, Corollary 2): nested partitions
  of its components from agglomerating their means; None for a teacher given by rows."""
  if teacher_fn is None or teacher_fn.gmm.num_components < 3:
    return None
  return certificate.hierarchy(np.asarray(teacher_fn.gmm.means))


def failure_message(rundir: Any, phase: str, error: BaseException, step: int | None,
                    source: str | None = None) -> str:
  """Where a phase that failed with an unexpected error left the run, and what a rerun
  does: ``rescue failed at step 2000 (TypeError, traceback above); its last good
  checkpoint is step 2000 of noalign; rerun to resume``.

  Args:
    rundir: the seed's :class:`certvae_jax.training.rundir.RunDir`.
    phase: the failed phase's directory name.
    error: the exception.
    step: the step the phase had reached (``None``: unknown).
    source: the phase it restarts from, for a restart mode (rescue from noalign).
  """
  where = f" at step {step}" if step is not None else ""
  head = f"{phase} failed{where} ({type(error).__name__}, traceback above)"
  for name in (phase, source):
    saved = rundir.latest_checkpoint_step(name) if name else None
    if saved is not None:
      return f"{head}; its last good checkpoint is step {saved} of {name}; rerun to resume"
  return (f"{head}; it saved no checkpoint (finished phases before it are kept); rerun to "
          "start it again")
