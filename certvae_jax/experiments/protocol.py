"""The papers' protocols over several seeds, and paper 2's KL-weight stress test.

Paper 1 (section 4; ``config.protocol.variants = ('full', 'noalign', 'rescue')``): for
each seed, warm-up, teacher search, then ``full``, ``noalign`` and ``rescue``
(restarted exactly from ``noalign``'s final checkpoint), all against the seed's one
teacher artifact. Seeds whose teacher search found no feasible candidate are stress
cases: listed, but kept out of the means (paper 1, appendix E.5).

Paper 2 (``configs/digits_simplex.py``; variants ``vae``, ``full`` = RST-VAE, ``rst_prefit``,
``rst_alpha_prefit``): the same loop, reported with paper 2's columns and the analytic code
energy ``E*`` and escape force of the teacher.

Writes ``protocol.json`` (one row per seed x variant x split) and ``protocol.md``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from certvae_jax import files, simplex, train as train_lib
from certvae_jax.experiments.tables import (
  kl_stress_table,
  markdown_table,
  paper2_table,
)
from certvae_jax.training import modes, phase_loop

ROW_KEYS = ("teacher_mi", "alignment", "bare_margin", "margin", "tau", "student_mi",
            "certified", "psnr", "active_units", "kl", "rec", "probe_accuracy",
            "mean_sq_norm_mu", "mi_estimate", "tau_sensitivity", "bounds", "recon_alignment",
            "recon_margin", "witness_recon_kl", "posthoc_margin", "posthoc_student_mi",
            "posthoc_certified", "property_margins", "witness_usage", "teacher_usage",
            "used_alignment", "used_margin")


def teacher_geometry(runner: train_lib.Runner) -> dict[str, float]:
  """Paper 2's teacher quantities for a simplex-witness run: ``E*`` and the escape force.

  Empty for other heads, or for teachers with zero entries (``E*`` needs ``log T``).
  """
  cfg = runner.config
  if cfg.model.head != "simplex":
    return {}
  t_train, _ = runner.teacher_targets()
  beta, lam = float(cfg.model.witness_beta), float(cfg.train.lambda_ts)
  ef = simplex.escape_force(t_train, beta, lam)
  out = {"escape_force_mean_sq": ef.closed_form}
  if (np.asarray(t_train) > 0).all():
    out["analytic_code_energy"] = simplex.analytic_code_energy(t_train, beta)
    alpha = simplex.least_certifiable_alpha(t_train, float(cfg.eval.tau))
    out["path_alpha_certified"] = alpha
    out["path_energy_certified"] = (None if alpha is None
                                    else alpha**2 * out["analytic_code_energy"])
  return out


def margin_energy_paths(config: ml_collections.ConfigDict, root: str,
                        seeds: Sequence[int]) -> dict[str, Any]:
  """Each seed's margin-energy path on its training split (paper 2, v4), for the report:
  ``{seed: {alphas, margin, energy, alpha_certified, energy_certified}}``."""
  out = {}
  for seed in seeds:
    runner = train_lib.Runner(with_seed(config, seed), seed_workdir(root, seed))
    t_train, _ = runner.teacher_targets()
    if not (np.asarray(t_train) > 0).all():
      continue
    path = simplex.margin_energy_path(t_train, float(config.model.witness_beta),
                                      tau=float(config.eval.tau))
    out[str(seed)] = {"alphas": path.alphas.tolist(), "margin": path.margin.tolist(),
                      "energy": path.energy.tolist(), "alpha_certified": path.alpha_certified,
                      "energy_certified": path.energy_certified}
  return out


def witness_energies(runner: train_lib.Runner, phase: str) -> dict[str, float]:
  """``{split: 1/2 E||mu[:K-1]||^2}`` of a finished simplex-witness phase: the model's
  position on the margin-energy path's energy axis (from its ``predictions.npz``)."""
  with np.load(os.path.join(runner.dir.phase(phase), "predictions.npz")) as f:
    k = f["train_teacher"].shape[1]
    return {split: simplex.witness_energy(f[f"{split}_mu"], k) for split in ("train", "test")}


def run_protocol(config: ml_collections.ConfigDict, root: str, seeds: Sequence[int],
                 target: str = "live", overwrite: bool = False,
                 fresh: bool = False) -> list[dict[str, Any]]:
  """Runs every seed and variant (reusing finished runs, resuming interrupted ones) and
  writes the tables. Each row says whether its run was ``reused``.

  Args:
    config: the run config; ``config.seed`` is replaced by each seed.
    root: directory holding ``seed<s>/`` workdirs and the protocol tables.
    seeds: the seeds to run.
    target: ``'live'`` or ``'fixed'`` teacher targets.
    overwrite: clear seed workdirs made by an incompatible run instead of refusing.
    fresh: refuse seed workdirs that already hold runs, instead of reusing them.

  With ``config.protocol.teacher_seed = t >= 0`` it runs paper 1's fixed-teacher control
  (appendix F.2): seed ``t``'s teacher (made in ``ROOT/seed<t>`` when missing) is held
  fixed while the training seed changes; the runs live in ``ROOT/teacher_seed<t>/seed<s>``
  and the tables are ``protocol_fixed_teacher.json`` / ``.md``, never pooled with the
  per-seed search.

  Returns:
    The rows written to ``protocol.json``.
  """
  if not seeds:
    raise ValueError("seeds: expected at least one seed")
  teacher_seed = int(config.protocol.teacher_seed)
  shared, workdir = None, lambda s: seed_workdir(root, s)
  if teacher_seed >= 0:
    source = train_lib.Runner(with_seed(config, teacher_seed),
                              seed_workdir(root, teacher_seed), overwrite=overwrite)
    source.ensure_teacher()
    shared = (source.teachers.directory, teacher_seed)
    workdir = lambda s: seed_workdir(os.path.join(root, f"teacher_seed{teacher_seed}"), s)  # noqa: E731
  if fresh:
    refuse_existing([workdir(seed) for seed in seeds])
  variants = tuple(config.protocol.variants)
  for v in variants:
    if v not in modes.CLI_MODES or v == "warmup":
      raise ValueError(f"config.protocol.variants: unknown variant {v!r}")
  rows = []
  for seed in seeds:
    runner = train_lib.Runner(with_seed(config, seed), workdir(seed), overwrite=overwrite,
                              shared_teacher=shared)
    for variant in variants:
      rows.extend(_rows(runner, variant, target))
  paper2 = config.model.head == "simplex"
  write_tables(root, table_stem(config, target), rows,
               paper2_table(rows) if paper2 else markdown_table(rows, variants))
  if paper2:
    paths = margin_energy_paths(config, root, seeds)
    files.atomic_write(os.path.join(root, "margin_energy_path.json"),
                       lambda fh: json.dump(paths, fh, indent=1), binary=False)
  return rows


def table_stem(config: ml_collections.ConfigDict, target: str = "live") -> str:
  """The protocol tables' file stem in the root:
  ``protocol[_fixed_teacher][_guard_<policy>][_shared_safe][_fixed]``.

  A guarded protocol's tables, or one with the shared-safe used head, sit beside the
  plain ones, never over them.
  """
  guard = "" if config.guard.policy == "off" else f"_guard_{config.guard.policy}"
  used = "" if config.train.used_head == "raw" else f"_{config.train.used_head}"
  shared = "_fixed_teacher" if int(config.protocol.teacher_seed) >= 0 else ""
  return "protocol" + shared + guard + used + ("" if target == "live" else "_fixed")


def refuse_existing(workdirs: Sequence[str]) -> None:
  for wd in workdirs:
    if os.path.isdir(wd) and any(name != ".lock" for name in os.listdir(wd)):
      raise ValueError(f"--fresh: {wd!r} already holds runs; use another --workdir, or drop "
                       "--fresh to reuse them")


def reuse_report(rows: Sequence[dict[str, Any]], name: str = "variant") -> str:
  """One line each for the runs reused and the runs made, e.g. ``reused: seed 0 full``;
  ``name``: the rows' key naming the run (``'method'`` in the baselines table)."""
  done = {(r["seed"], r[name], r["reused"]) for r in rows}
  out = []
  for reused, word in ((True, "reused (finished before)"), (False, "ran")):
    runs = sorted((s, v) for s, v, flag in done if flag == reused)
    if runs:
      out.append(f"{word}: " + ", ".join(f"seed {s} {v}" for s, v in runs))
  return "\n".join(out)


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.seed = int(seed)
  return cfg


def seed_workdir(root: str, seed: int) -> str:
  """A seed's run directory under a protocol root: ``ROOT/seed<s>``."""
  return os.path.join(root, f"seed{seed}")


def run_phase(runner: train_lib.Runner, mode: str, target: str = "live"
              ) -> tuple[str, bool, dict[str, Any]]:
  """Runs ``mode`` in the runner's workdir, or reuses its finished run:
  ``(phase, reused, summary)``. The one per-seed step of every table over seeds."""
  phase = phase_loop.phase_name(runner.config, mode, target)
  reused = runner.dir.read_summary(phase) is not None
  return phase, reused, runner.run_mode(mode, target)


def _rows(runner: train_lib.Runner, variant: str, target: str) -> list[dict[str, Any]]:
  phase, reused, summary = run_phase(runner, variant, target)
  qc = runner.teacher_info["selected_scores"]
  geometry = teacher_geometry(runner)
  energies = witness_energies(runner, phase) if geometry else {}
  if variant == "rst_alpha_prefit":  # the scale its prefit stage regressed onto
    prefit = runner.dir.read_summary(phase_loop.phase_name(runner.config, "prefit_alpha", target))
    geometry = dict(geometry, prefit_alpha=prefit["weights"]["code_scale"])
  rows = []
  for split in ("train", "test"):
    row = {"seed": int(runner.config.seed), "variant": variant, "phase": phase,
           "split": split, "guard_interventions": summary.get("guard_interventions"),
           "target": target, "step": summary["step"], "stress_case": summary["stress_case"],
           "teacher_id": summary["teacher_id"], "teacher_qc": qc,
           "collapse": summary.get("collapse"),
           "alpha_kl": float(runner.config.train.alpha_kl), "reused": reused, **geometry}
    row.update({k: summary[split].get(k) for k in ROW_KEYS})
    if energies:
      row["witness_energy"] = energies[split]
    rows.append(row)
  return rows


def write_tables(root: str, stem: str, rows: list[dict[str, Any]], markdown: str) -> None:
  os.makedirs(root, exist_ok=True)
  files.atomic_write(os.path.join(root, f"{stem}.json"),
                     lambda fh: json.dump(rows, fh, indent=1), binary=False)
  files.write_text(os.path.join(root, f"{stem}.md"), markdown)


def run_kl_stress(config: ml_collections.ConfigDict, root: str, seeds: Sequence[int],
                  alphas: Sequence[float], overwrite: bool = False,
                  fresh: bool = False) -> list[dict[str, Any]]:
  """Paper 2's KL-weight stress test: ``config.protocol.kl_stress_variants`` (RST-VAE,
  ``full``, by default; paper 2's configs add the plain VAE and RST-alpha-prefit) at
  several ``alpha_KL``.

  Does the certificate stay positive as the KL weight grows? Beside each measured
  margin it reports the escape force (which does not depend on ``alpha_KL``) and the
  energy balance at the analytic code, ``lambda_TS * I_T - alpha_KL * E*``: the
  alignment a perfect code gains against the KL it costs (our heuristic predictor;
  the decoder's side of the trade-off is left out). Writes ``kl_stress.json`` / ``.md``.
  """
  if not alphas:
    raise ValueError("kl_stress: expected at least one KL weight")
  if fresh:
    refuse_existing([os.path.join(root, f"alpha{float(a):g}", f"seed{s}")
                      for a in alphas for s in seeds])
  rows = []
  for alpha in alphas:
    if not np.isfinite(alpha) or alpha < 0:
      raise ValueError(f"kl_stress: KL weights must be finite and >= 0, got {alpha}")
    for seed in seeds:
      cfg = with_seed(config, seed)
      cfg.train.alpha_kl = float(alpha)
      runner = train_lib.Runner(cfg, os.path.join(root, f"alpha{alpha:g}", f"seed{seed}"),
                                overwrite=overwrite)
      for variant in config.protocol.kl_stress_variants:
        rows.extend(_rows(runner, variant, "live"))
  write_tables(root, "kl_stress", rows, kl_stress_table(rows, float(config.train.lambda_ts)))
  return rows
