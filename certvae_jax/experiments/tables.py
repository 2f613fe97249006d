"""The protocol's Markdown tables: paper 1's per-seed table with its bounds and
reconstruction-side parts, paper 2's table, the KL-stress table, the property margins, the
shared-safe used head."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DISPLAY = {"vae": "VAE", "full": "full", "noalign": "noalign", "rescue": "rescue",
           "rst_prefit": "RST-prefit", "rst_alpha_prefit": "RST-α-prefit",
           "escape": "escape (RST-VAE from VAE)"}


def kl_stress_table(rows: list[dict[str, Any]], lambda_ts: float) -> str:
  """Means over seeds per KL weight, with the predictors of :func:`run_kl_stress`."""
  out = ("| alpha_KL | model | split | seeds | G_T (bare) | certified | active units | E‖mu‖² | "
         "escape force ||F||^2 | lambda_TS I_T - alpha_KL E* |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n")
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  for alpha, variant, split in ((a, v, s) for a in sorted({r["alpha_kl"] for r in rows})
                                for v in variants for s in ("train", "test")):
    sel = [r for r in rows if r["alpha_kl"] == alpha and r["split"] == split
           and r["variant"] == variant]
    if not sel:
      continue
    g = np.array([r["bare_margin"] for r in sel], float)
    balance = "-"
    if "analytic_code_energy" in sel[0]:
      gain = np.mean([lambda_ts * r["teacher_mi"] for r in sel])
      balance = f"{gain - alpha * sel[0]['analytic_code_energy']:+.3f}"
    name = "RST-VAE" if variant == "full" else DISPLAY.get(variant, variant)
    out += (f"| {alpha:g} | {name} | {split} | {len(sel)} | {g.mean():+.3f} ± {g.std():.3f} | "
            f"{sum(bool(r['certified']) for r in sel)}/{len(sel)} | "
            f"{np.mean([r['active_units'] for r in sel]):.1f} | "
            f"{np.mean([r['mean_sq_norm_mu'] for r in sel]):.2f} | "
            f"{sel[0].get('escape_force_mean_sq', float('nan')):.3f} | {balance} |\n")
  return out


def mean_std(values: Sequence[float]) -> str:
  v = np.asarray(values, float)
  return f"{v.mean():+.3f} ± {v.std():.3f}"


def _fmt(v: Any, spec: str = "+.3f") -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return "yes" if v else "no"
  return format(v, spec)


def paper2_table(rows: list[dict[str, Any]]) -> str:
  """Paper 2's columns (its MNIST table), means ± std over seeds, per split."""
  out = ("| model | split | seeds | I_T | L_TS | G_T | certified | rec. | KL | E‖mu‖² | AU "
         "| E* |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  for variant in variants:
    for split in ("train", "test"):
      sel = [r for r in rows if r["variant"] == variant and r["split"] == split]
      mean = lambda key: np.mean([r[key] for r in sel])  # noqa: E731
      g = np.array([r["bare_margin"] for r in sel], float)
      energy = sel[0].get("analytic_code_energy")
      name = "RST-VAE" if variant == "full" else DISPLAY[variant]
      if "prefit_alpha" in sel[0]:
        name += f" (α={np.mean([r['prefit_alpha'] for r in sel]):.2f})"
      out += (f"| {name} | {split} | {len(sel)} "
              f"| {mean('teacher_mi'):.4f} | {mean('alignment'):.4f} | {g.mean():+.4f} ± "
              f"{g.std():.4f} | {sum(bool(r['certified']) for r in sel)}/{len(sel)} | "
              f"{mean('rec'):.2f} | {mean('kl'):.2f} | {mean('mean_sq_norm_mu'):.2f} | "
              f"{mean('active_units'):.1f} | {_fmt(energy, '.4f')} |\n")
  return out + ("\nG_T = I_T - L_TS (no tau), as in paper 2; `certified` uses G_tau > 0 with "
                "tau = 0.05. rec. is the Bernoulli negative log-likelihood per image (nats).\n")


def markdown_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
  """Per-seed rows, then means over the feasible seeds (stress cases apart)."""
  head = ("| seed | variant | split | I_T | L_TS | G_tau | certified | I_S | post-hoc G_tau | "
          "collapse | PSNR | AU | probe acc | stress |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
  lines = [f"| {r['seed']} | {r['variant']} | {r['split']} | {_fmt(r['teacher_mi'], '.3f')} | "
           f"{_fmt(r['alignment'], '.3f')} | {_fmt(r['margin'])} | {_fmt(r['certified'])} | "
           f"{_fmt(r['student_mi'], '.3f')} | {_fmt(r.get('posthoc_margin'))} | "
           f"{r.get('collapse') or '-'} | {_fmt(r['psnr'], '.2f')} | {r['active_units']} | "
           f"{_fmt(r['probe_accuracy'], '.3f')} | {_fmt(r['stress_case'])} |" for r in rows]
  out = head + "\n".join(lines) + "\n"
  feasible = [r for r in rows if not r["stress_case"]]
  if feasible:
    out += ("\nMeans over feasible seeds (± standard deviation):\n\n"
            "| variant | split | seeds | G_tau | certified | I_S | post-hoc G_tau | "
            "active units |\n|---|---|---|---|---|---|---|---|\n")
    for variant in variants:
      for split in ("train", "test"):
        sel = [r for r in feasible if r["variant"] == variant and r["split"] == split]
        if not sel:
          continue
        g = np.array([r["margin"] for r in sel], float)
        i_s = np.array([r["student_mi"] for r in sel], float)
        au = np.array([r["active_units"] for r in sel], float)
        post = [r["posthoc_margin"] for r in sel if r.get("posthoc_margin") is not None]
        out += (f"| {variant} | {split} | {len(sel)} | {g.mean():+.3f} ± {g.std():.3f} | "
                f"{sum(bool(r['certified']) for r in sel)}/{len(sel)} | {i_s.mean():.3f} | "
                f"{mean_std(post) if post else '-'} | {au.mean():.1f} |\n")
  out += (bounds_table(feasible, variants) + recon_table(feasible, variants)
          + property_table(feasible, variants) + used_head_table(feasible, variants))
  stress = sorted({r["seed"] for r in rows if r["stress_case"]})
  if stress:
    out += f"\nStress-case seeds (no feasible teacher; not pooled): {stress}\n"
  return out


def _mean_std(values: Sequence[float]) -> str:
  v = np.array(values, float)
  return f"{v.mean():+.3f} ± {v.std():.3f}"


def bounds_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
  """The test split's margin and its population lower bounds, means over seeds."""
  sel = {v: [r for r in rows if r["variant"] == v and r["split"] == "test" and r.get("bounds")]
         for v in variants}
  if not any(sel.values()):
    return ""
  first = next(r for v in variants for r in sel[v])["bounds"]
  out = (f"\nTest split: the margin on these rows and its lower bounds for the population at "
         f"confidence {1 - first['delta']:g} ({first['num_resamples']} bootstrap resamples; "
         f"distribution-free for the witness floored at eta = {first['student_floor']:g}):\n\n"
         "| variant | n | G_tau on the test rows | bootstrap bound | distribution-free bound |\n"
         "|---|---|---|---|---|\n")
  for v in variants:
    b = [r["bounds"] for r in sel[v]]
    if b:
      out += f"| {v} | {b[0]['n']} | {_means(b, ('sample', 'bootstrap', 'distribution_free'))} |\n"
  return out


def _means(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
  """``mean ± std`` of each key over the rows, as table cells."""
  return " | ".join(_mean_std([r[key] for r in rows]) for key in keys)


def recon_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
  """The reconstruction-side diagnostics (never a certificate), means over seeds."""
  sel = [r for r in rows if r.get("recon_alignment") is not None]
  if not sel:
    return ""
  out = ("\nReconstruction side (diagnostics, not a certificate): L_rec = mean KL(T(x) || "
         "T(x_hat)), its margin I_T - tau - L_rec, and mean KL(s(mu) || T(x_hat)):\n\n"
         "| variant | split | L_rec | reconstruction margin | KL(s ‖ T(x_hat)) |\n"
         "|---|---|---|---|---|\n")
  for v in variants:
    for split in ("train", "test"):
      part = [r for r in sel if r["variant"] == v and r["split"] == split]
      if part:
        keys = ("recon_alignment", "recon_margin", "witness_recon_kl")
        out += f"| {v} | {split} | {_means(part, keys)} |\n"
  return out


def property_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
  """Paper 1's Corollary 2 on the test split: G_tau of the full teacher and of each coarser
  property (its GMM components merged into G groups), and how many components the witness
  uses; means over seeds."""
  sel = {v: [r for r in rows if r["variant"] == v and r["split"] == "test"
             and r.get("property_margins")] for v in variants}
  if not any(sel.values()):
    return ""
  first = next(r for v in variants for r in sel[v])
  levels = sorted({int(g) for v in variants for r in sel[v] for g in r["property_margins"]},
                  reverse=True)
  out = ("\nTest split: G_tau of each coarser property of the teacher (its components merged "
         "into G groups by their means; paper 1, Corollary 2), and the components the witness "
         "and the teacher use (argmax share above 1 %):\n\n"
         f"| variant | G = K = {len(first['teacher_usage']['hard_usage'])} | "
         + " | ".join(f"G = {g}" for g in levels)
         + " | witness uses | teacher uses |\n|---|---|" + "---|" * len(levels) + "---|---|\n")
  for v in variants:
    if not sel[v]:
      continue
    cells = [_mean_std([r["margin"] for r in sel[v]])]
    cells += [_mean_std([r["property_margins"][str(g)] for r in sel[v]
                         if str(g) in r["property_margins"]]) for g in levels]
    cells += [f"{np.mean([r[key]['components_used'] for r in sel[v]]):.1f}"
              for key in ("witness_usage", "teacher_usage")]
    out += f"| {v} | " + " | ".join(cells) + " |\n"
  return out


def used_head_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
  """The raw certificate beside the shared-safe used head's margin (paper 1, appendix
  E.9), means over seeds; empty when no run had the used head."""
  sel = {v: [r for r in rows if r["variant"] == v and r.get("used_margin") is not None]
         for v in variants}
  if not any(sel.values()):
    return ""
  out = ("\nShared-safe used head: the raw head's G_tau (the certificate) and the calibrated "
         "used head's, means ± standard deviation over seeds:\n\n"
         "| variant | split | raw G_tau | used G_tau |\n|---|---|---|---|\n")
  for v in variants:
    for split in ("train", "test"):
      part = [r for r in sel[v] if r["split"] == split]
      if part:
        out += (f"| {v} | {split} | {_mean_std([r['margin'] for r in part])} | "
                f"{_mean_std([r['used_margin'] for r in part])} |\n")
  return out
