"""A report of a protocol directory: ``report/report.md``, PNG figures, one HTML page.

``python launch/report.py RUNDIR`` renders whatever the directory holds, for one or
more seeds (``RUNDIR/seed<s>/``): the margin trajectories of full, noalign and rescue
(paper 1's figures), student MI and active units over steps, the tau-sensitivity table
(paper 1, appendix B), each seed's teacher QC and candidate grid, the population bounds
and reconstruction-side diagnostics of the test split, and paper 2's table and KL-stress
plot and paper 1's baselines (a bar chart of raw against post-hoc margins) when their
JSON is present. Every number is read from the run's own files
(``metrics.jsonl``, ``summary.json``, ``teacher/teacher.json``, ``protocol*.json``,
``kl_stress.json``); nothing is recomputed.
"""

from __future__ import annotations

import base64
import html
import os
import re
from typing import Any, Sequence

import numpy as np

from certvae_jax import files as files_lib
from certvae_jax.experiments import baselines as baselines_lib, figures, tables
from certvae_jax.training import modes
from certvae_jax.training.writers import read_jsonl

ORDER = ("full", "noalign", "rescue", "vae", "rst_prefit", "rst_alpha_prefit", "escape")


def _read(path: str) -> Any:
  return files_lib.read_json(path, expect=None)


def seed_dirs(root: str) -> list[tuple[int, str]]:
  """``[(seed, path)]`` of the ``seed<s>`` workdirs under ``root``, by seed."""
  found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
           if (m := re.fullmatch(r"seed(\d+)", name)) and os.path.isdir(os.path.join(root, name))]
  return sorted(found)


def _phases(workdir: str, target: str) -> dict[str, dict[str, Any]]:
  """``{variant: summary}`` of the finished phases of ``target``, in :data:`ORDER`.

  Only each mode's own directory counts: a guarded run of the same mode
  (``full_guard_raise``, ``rescue_sf200``) sits beside it and is not this report's.
  """
  out = {}
  for name in sorted(os.listdir(workdir)):
    s = _read(os.path.join(workdir, name, "summary.json"))
    if (s and s.get("mode") in ORDER and s.get("target") == target
        and name == modes.phase_dir(s["mode"], target)):  # untagged, unguarded
      out[s["mode"]] = dict(s, phase=name)
  return {v: out[v] for v in ORDER if v in out}


def trajectory(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
  """The evaluation rows of a ``metrics.jsonl`` as lists over steps."""
  evals = [r for r in rows if "test/margin" in r]
  out = {"step": [r["step"] for r in evals]}
  for split in ("train", "test"):
    out[split] = [r[f"{split}/margin"] for r in evals]
    for key in ("student_mi", "active_units"):
      out[f"{key}_{split}"] = [r[f"{split}/{key}"] for r in evals]
  return out


def collect(root: str, target: str = "live") -> dict[str, Any]:
  """Everything the report shows, read from ``root``'s files."""
  seeds = []
  for seed, wd in seed_dirs(root):
    phases = _phases(wd, target)
    if not phases:
      continue
    any_summary = next(iter(phases.values()))
    variants = {}
    for v, s in phases.items():
      run = trajectory(read_jsonl(os.path.join(wd, s["phase"], "metrics.jsonl")))
      run["bounds"] = s["test"].get("bounds")
      variants[v] = run
    seeds.append({"seed": seed, "tau": any_summary["train"]["tau"], "summaries": phases,
                  "teacher_mi": {sp: any_summary[sp]["teacher_mi"] for sp in ("train", "test")},
                  "teacher": _read(os.path.join(wd, "teacher", "teacher.json")),
                  "variants": variants})
  suffix = "" if target == "live" else "_fixed"
  return {"root": root, "target": target, "seeds": seeds,
          "protocol": _read(os.path.join(root, f"protocol{suffix}.json")),
          "kl_stress": _read(os.path.join(root, "kl_stress.json")),
          "paths": _read(os.path.join(root, "margin_energy_path.json")),
          "baselines": _read(os.path.join(root, "baselines.json"))}


# -- tables ----------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def _pm(values: Sequence[float], spec: str = "+.3f") -> str:
  v = np.asarray(values, float)
  return f"{format(v.mean(), spec)} ± {v.std():.3f}"


def _split_rows(data: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
  """``(variant, split, [split metrics per seed])`` from the summaries."""
  out = []
  for v in ORDER:
    for split in ("train", "test"):
      per_seed = [s["summaries"][v][split] for s in data["seeds"] if v in s["summaries"]]
      if per_seed:
        out.append((v, split, per_seed))
  return out


def summary_table(data: dict[str, Any]) -> str:
  rows = [(v, sp, len(m), _pm([x["margin"] for x in m]),
           f"{sum(bool(x['certified']) for x in m)}/{len(m)}",
           _pm([x["student_mi"] for x in m], ".3f"), _pm([x["active_units"] for x in m], ".1f"))
          for v, sp, m in _split_rows(data)]
  return _table(("variant", "split", "seeds", "G_tau", "certified", "student MI I_S",
                 "active units"), rows)


def tau_table(data: dict[str, Any]) -> str:
  taus = sorted(next(iter(next(iter(data["seeds"]))["summaries"].values()))["train"]
                ["tau_sensitivity"], key=float)
  rows = [(v, sp, *(_pm([x["tau_sensitivity"][t] for x in m]) for t in taus))
          for v, sp, m in _split_rows(data)]
  return _table(("variant", "split", *(f"G_tau, tau = {t}" for t in taus)), rows)


def teacher_tables(data: dict[str, Any]) -> tuple[str, str]:
  """The selected teacher's QC per seed, and every candidate of the grid."""
  qc, grid = [], []
  for s in data["seeds"]:
    info = s["teacher"]
    if not info:
      continue
    sc = info["selected_scores"]
    kind = info.get("kind", "gmm")
    sel = info["candidates"][info["selected"]] if "candidates" in info else {}
    qc.append((s["seed"], kind, sel.get("components", "-"), sel.get("covariance_type", "-"),
               f"{sc['teacher_mi']:.3f}", f"{sc['mean_margin']:.3f}",
               f"{sc['high_margin_fraction']:.3f}", f"{sc['hard_balance_kl']:.3f}",
               f"{sc['soft_usage_kl']:.3f}", f"{sc['min_mass']:.4f}",
               "stress case" if info.get("stress_case") else "feasible"))
    for c in info.get("candidates", []):
      csc = c.get("scores", {})
      grid.append((s["seed"], c["components"], c["covariance_type"], c["seed"],
                   f"{csc['teacher_mi']:.3f}" if csc else "-",
                   f"{csc['min_mass']:.4f}" if csc else "-",
                   "yes" if c["feasible"] else "no", c.get("reason") or ""))
  qc_md = _table(("seed", "kind", "K", "covariance", "I_T", "top-1 margin", "high-margin frac.",
                  "hard balance KL", "soft usage KL", "min mass", "selection"), qc) if qc else ""
  grid_md = _table(("seed", "K", "covariance", "GMM seed", "I_T", "min mass", "feasible",
                    "reason"), grid) if grid else ""
  return qc_md, grid_md


def bounds_table(data: dict[str, Any]) -> str:
  rows = []
  for s in data["seeds"]:
    for v, summ in s["summaries"].items():
      b = summ["test"].get("bounds")
      if b:
        rows.append((s["seed"], v, b["n"], f"{b['sample']:+.3f}", f"{b['bootstrap']:+.3f}",
                     f"{b['distribution_free']:+.3f}", f"{1 - b['delta']:g}"))
  return _table(("seed", "variant", "n", "G_tau (test rows)", "bootstrap bound",
                 "distribution-free bound", "confidence"), rows) if rows else ""


def recon_table(data: dict[str, Any]) -> str:
  rows = [(v, sp, _pm([x["recon_alignment"] for x in m], ".3f"),
           _pm([x["recon_margin"] for x in m]), _pm([x["witness_recon_kl"] for x in m], ".3f"))
          for v, sp, m in _split_rows(data) if all("recon_alignment" in x for x in m)]
  return _table(("variant", "split", "L_rec", "reconstruction margin", "KL(s ‖ T(x_hat))"),
                rows) if rows else ""


# -- the report --------------------------------------------------------------------------

def render(root: str, target: str = "live", out_dir: str | None = None) -> dict[str, str]:
  """Writes ``report.md``, the PNGs and ``report.html`` into ``out_dir`` (default
  ``root/report``) from whatever ``root`` holds.

  Returns:
    ``{name: path}`` of the files written.

  Raises:
    ValueError: ``root`` holds no finished run of ``target`` and no KL-stress table, or
      matplotlib is missing (naming the extra to install).
  """
  data = collect(root, target)
  if not data["seeds"] and not data["kl_stress"]:
    raise ValueError(f"report: {root!r} holds no finished run (seed<s>/<mode>/summary.json "
                     f"with target {target!r}) and no kl_stress.json")
  out_dir = out_dir or os.path.join(root, "report")
  os.makedirs(out_dir, exist_ok=True)
  files, parts = {}, [f"# Report: {root}\n",
                      f"Target: {target}. Seeds: {[s['seed'] for s in data['seeds']]}. Every "
                      "number comes from the run's files; G_tau in nats, tau as run.\n"]
  if data["seeds"]:
    parts += _seed_sections(data, out_dir, files)
  if data["baselines"]:
    files["baselines.png"] = os.path.join(out_dir, "baselines.png")
    figures.baselines_bars(files["baselines.png"], data["baselines"])
    parts += ["## Paper 1's baselines: raw and post-hoc margins\n",
              "![raw and post-hoc G_tau per method](baselines.png)\n",
              "Test-split G_tau of each method's raw witness, trained with it, and of a "
              "linear head fitted afterwards on its frozen code: a positive post-hoc margin "
              "under a negative raw one is a collapsed witness on a non-constant code.\n",
              baselines_lib.baselines_table(data["baselines"])]
  if data["kl_stress"]:
    files["kl_stress.png"] = os.path.join(out_dir, "kl_stress.png")
    figures.kl_stress(files["kl_stress.png"], data["kl_stress"])
    lam = _lambda_ts(data)
    parts += ["## Paper 2: KL-weight stress test\n",
              "![G_T against the KL weight](kl_stress.png)\n",
              "RST-VAE's bare margin G_T = I_T - L_TS against the KL weight alpha_KL "
              "(mean ± std over seeds): above tau, certified (G_tau = G_T - tau > 0). "
              "Overlapping lines are models whose margins agree.\n",
              tables.kl_stress_table(data["kl_stress"], lam) if lam is not None else ""]
  markdown = "\n".join(p for p in parts if p)
  files["report.md"] = os.path.join(out_dir, "report.md")
  files_lib.write_text(files["report.md"], markdown)
  files["report.html"] = os.path.join(out_dir, "report.html")
  files_lib.write_text(files["report.html"],
                       to_html(markdown, out_dir, title=f"certvae_jax report: {root}"))
  return files


def _lambda_ts(data: dict[str, Any]) -> float | None:
  for s in data["seeds"]:
    for summ in s["summaries"].values():
      if "lambda_ts" in summ.get("weights", {}):
        return float(summ["weights"]["lambda_ts"])
  for dirpath, _, names in os.walk(data["root"]):
    if "summary.json" in names and os.path.basename(dirpath) == "full":
      return float(_read(os.path.join(dirpath, "summary.json"))["weights"]["lambda_ts"])
  return None


def _seed_sections(data: dict[str, Any], out_dir: str, files: dict[str, str]) -> list[str]:
  seeds = data["seeds"]
  files["margin_trajectories.png"] = os.path.join(out_dir, "margin_trajectories.png")
  figures.margin_trajectories(files["margin_trajectories.png"], seeds)
  files["diagnostics.png"] = os.path.join(out_dir, "diagnostics.png")
  figures.diagnostics_trajectories(files["diagnostics.png"], seeds)
  qc, grid = teacher_tables(data)
  rows = data["protocol"]
  paper2 = rows and any(r["variant"] in ("vae", "rst_prefit") for r in rows)
  parts = [
      "## The certificate over training\n",
      "![G_tau over training steps](margin_trajectories.png)\n",
      "G_tau = I_T - tau - L_TS (nats) at every evaluation: above 0 the raw witness beats "
      "the best constant prediction by more than tau, which certifies that the code is not "
      "constant (paper 1, Theorem 1). Train solid, test dashed; rescue continues noalign "
      "from its last step. Black: the certification threshold G_tau = 0. Grey dotted: I_T - tau, the "
      "margin of a witness with L_TS = 0. Hanging from the last test point, where the run "
      "computed them: the population lower bounds (bar: bootstrap; triangle: "
      "distribution-free).\n",
      "## Means over seeds\n", summary_table(data),
      "## Tau sensitivity (paper 1, appendix B)\n", tau_table(data),
      "## Student MI and active units\n",
      "![student MI and active units over training steps](diagnostics.png)\n",
      "The witness's mutual information I_S (0 for a constant witness) and the latent units "
      "whose posterior means vary across inputs (variance above eval.active_unit_threshold), "
      "per evaluation.\n"]
  if bounds_table(data):
    parts += ["## Population lower bounds (test split)\n", bounds_table(data)]
  if recon_table(data):
    parts += ["## Reconstruction side (diagnostics, not a certificate)\n", recon_table(data)]
  if qc:
    parts += ["## Teacher quality control (selected teacher per seed)\n", qc]
  if grid:
    parts += ["## Teacher candidate grid\n", grid]
  if paper2:
    parts += ["## Paper 2 table\n", tables.paper2_table(rows)]
  escapes = [(s["seed"], s["summaries"]["escape"]["escape_trajectory"]) for s in data["seeds"]
             if "escape" in s["summaries"]]
  if escapes:
    files["escape_trajectories.png"] = os.path.join(out_dir, "escape_trajectories.png")
    figures.escape_trajectories(files["escape_trajectories.png"], escapes)
    parts += ["## Paper 2: escape trajectories\n",
              "![margin and gradient norms of the escape runs](escape_trajectories.png)\n",
              "RST-VAE restarted exactly from the plain VAE's final checkpoint (its first point), "
              "one line per seed: the train split's witness margin G_tau, and the norms of the "
              "alignment gradient with respect to the encoder means (per row, averaged) and to "
              "the encoder's parameters, on the first eval.batch_size training rows.\n"]
  if paper2 and data["paths"]:
    files["margin_energy_path.png"] = os.path.join(out_dir, "margin_energy_path.png")
    figures.margin_energy_path(files["margin_energy_path.png"], data["paths"], rows)
    least = [p["alpha_certified"] for p in data["paths"].values()
             if p["alpha_certified"] is not None]
    parts += ["## Paper 2: the margin-energy path\n",
              "![witness margin against code energy](margin_energy_path.png)\n",
              "The scaled analytic codes alpha mu* (alpha from 0, the uniform constant "
              "predictor, to 1, the exact teacher code) scored by the fixed witness: its margin "
              "G_tau against the code's energy 1/2 E||mu[:K-1]||^2 = alpha^2 E*. Each trained "
              "model sits at its own margin and witness-subspace energy. Least certifiable "
              f"alpha per seed: {', '.join(f'{a:.3f}' for a in least) or '-'}.\n"]
  return parts


def _cells(line: str) -> list[str]:
  return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]


def to_html(markdown: str, image_dir: str, title: str) -> str:
  """The report's Markdown as one self-contained HTML page (images embedded).

  Handles what :func:`render` writes: headings, pipe tables, images and paragraphs.
  """
  body, table = [], []

  def flush_table():
    if table:
      head, rows = table[0], table[2:]
      body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in _cells(head)) + "</tr>"
                  + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in _cells(r)) + "</tr>"
                            for r in rows) + "</table>")
      table.clear()

  for line in markdown.splitlines():
    if line.startswith("|"):
      table.append(line)
      continue
    flush_table()
    if m := re.fullmatch(r"(#+) (.*)", line):
      level = len(m.group(1))
      body.append(f"<h{level}>{html.escape(m.group(2))}</h{level}>")
    elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
      with open(os.path.join(image_dir, m.group(2)), "rb") as fh:
        encoded = base64.b64encode(fh.read()).decode()
      body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{encoded}">')
    elif line.strip():
      body.append(f"<p>{html.escape(line)}</p>")
  flush_table()
  style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
           "padding:3px 8px;text-align:right}img{max-width:100%}")
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
          f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
          + "\n</body></html>\n")
