"""Paper 1's prevention -> collapse -> rescue protocol over several seeds (section 4).

For each seed: warm-up, teacher search, then ``full``, ``noalign`` and ``rescue``
(restarted exactly from ``noalign``'s final checkpoint), all against the seed's one
teacher artifact. Writes ``protocol.json`` (one row per seed x variant x split) and
``protocol.md`` (a table like the paper's Table 1, with student MI, PSNR, active units
and probe accuracy). Seeds whose teacher search found no feasible candidate are
stress cases: listed, but kept out of the means (paper 1, appendix E.5).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from certvae_jax import train as train_lib

VARIANTS = ("full", "noalign", "rescue")
ROW_KEYS = ("teacher_mi", "alignment", "bare_margin", "margin", "tau", "student_mi",
            "certified", "psnr", "active_units", "kl", "probe_accuracy", "mean_sq_norm_mu",
            "mi_estimate", "tau_sensitivity")


def run_protocol(config: ml_collections.ConfigDict, root: str, seeds: Sequence[int],
                 target: str = "live", log: Callable[[str], None] | None = None
                 ) -> list[dict[str, Any]]:
  """Runs every seed and variant (resuming what exists) and writes the tables.

  Args:
    config: the run config; ``config.seed`` is replaced by each seed.
    root: directory holding ``seed<s>/`` workdirs and the protocol tables.
    seeds: the seeds to run.
    target: ``'live'`` or ``'fixed'`` teacher targets.
    log: progress messages (default: stderr).

  Returns:
    The rows written to ``protocol.json``.
  """
  if not seeds:
    raise ValueError("seeds: expected at least one seed")
  rows = []
  for seed in seeds:
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.seed = int(seed)
    runner = train_lib.Runner(cfg, os.path.join(root, f"seed{seed}"), log)
    for variant in VARIANTS:
      summary = runner.run_mode(variant, target)
      qc = runner.teacher_info["selected_scores"]
      for split in ("train", "test"):
        row = {"seed": int(seed), "variant": variant, "split": split, "target": target,
               "step": summary["step"], "stress_case": summary["stress_case"],
               "teacher_id": summary["teacher_id"], "teacher_qc": qc}
        row.update({k: summary[split].get(k) for k in ROW_KEYS})
        rows.append(row)
  suffix = "" if target == "live" else "_fixed"
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f"protocol{suffix}.json"), "w") as fh:
    json.dump(rows, fh, indent=1)
  with open(os.path.join(root, f"protocol{suffix}.md"), "w") as fh:
    fh.write(markdown_table(rows))
  return rows


def _fmt(v: Any, spec: str = "+.3f") -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return "yes" if v else "no"
  return format(v, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """Per-seed rows, then means over the feasible seeds (stress cases apart)."""
  head = ("| seed | variant | split | I_T | L_TS | G_tau | certified | I_S | PSNR | AU | "
          "probe acc | stress |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
  lines = [f"| {r['seed']} | {r['variant']} | {r['split']} | {_fmt(r['teacher_mi'], '.3f')} | "
           f"{_fmt(r['alignment'], '.3f')} | {_fmt(r['margin'])} | {_fmt(r['certified'])} | "
           f"{_fmt(r['student_mi'], '.3f')} | {_fmt(r['psnr'], '.2f')} | {r['active_units']} | "
           f"{_fmt(r['probe_accuracy'], '.3f')} | {_fmt(r['stress_case'])} |" for r in rows]
  out = head + "\n".join(lines) + "\n"
  feasible = [r for r in rows if not r["stress_case"]]
  if feasible:
    out += ("\nMeans over feasible seeds (± standard deviation):\n\n"
            "| variant | split | seeds | G_tau | certified | I_S | active units |\n"
            "|---|---|---|---|---|---|---|\n")
    for variant in VARIANTS:
      for split in ("train", "test"):
        sel = [r for r in feasible if r["variant"] == variant and r["split"] == split]
        if not sel:
          continue
        g = np.array([r["margin"] for r in sel], float)
        i_s = np.array([r["student_mi"] for r in sel], float)
        au = np.array([r["active_units"] for r in sel], float)
        out += (f"| {variant} | {split} | {len(sel)} | {g.mean():+.3f} ± {g.std():.3f} | "
                f"{sum(bool(r['certified']) for r in sel)}/{len(sel)} | {i_s.mean():.3f} | "
                f"{au.mean():.1f} |\n")
  stress = sorted({r["seed"] for r in rows if r["stress_case"]})
  if stress:
    out += f"\nStress-case seeds (no feasible teacher; not pooled): {stress}\n"
  return out
