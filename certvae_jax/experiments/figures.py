"""Figures of a protocol directory (matplotlib, Agg backend; no display needed).

Paper 1's figures are margin trajectories: the prevention -> collapse -> rescue story
is told by ``G_tau`` over training steps. Each function takes plain data (from
:mod:`certvae_jax.experiments.report_page`) and writes one PNG of a fixed size, so that the figures
of two runs line up on a page. Colours are fixed per variant across every figure; the
train split is drawn solid, the test split dashed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DPI = 110
PANEL = (4.4, 3.4)  # inches per seed panel
COLORS = {"full": "#1f77b4", "noalign": "#d62728", "rescue": "#2ca02c", "vae": "#9467bd",
          "rst_prefit": "#ff7f0e", "rst_alpha_prefit": "#8c564b", "escape": "#e377c2"}
SPLIT_STYLE = {"train": {"linestyle": "-", "marker": "o"},
               "test": {"linestyle": "--", "marker": "s"}}
_EXTRA = "pip install -e \".[report]\" (or pip install matplotlib)"


PAPER2_NAMES = {"vae": "VAE", "full": "RST-VAE", "rst_prefit": "RST-prefit",
                "rst_alpha_prefit": "RST-α-prefit", "escape": "escape"}


def pyplot():
  """matplotlib's pyplot on the Agg backend, or a ``ValueError`` naming the extra."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"report: the figures need matplotlib, which is not installed: {_EXTRA}"
                     ) from e
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


LEGEND = 0.95  # inches below the panels for the shared legend


def figure_size(panels: int, rows: int = 1) -> tuple[int, int]:
  """The pixel size of a figure of ``panels`` columns and ``rows`` rows (plus legend)."""
  w, h = _inches(panels, rows)
  return int(round(w * DPI)), int(round(h * DPI))


def _inches(panels: int, rows: int) -> tuple[float, float]:
  return PANEL[0] * panels, PANEL[1] * rows + LEGEND


def _color(variant: str) -> str:
  return COLORS.get(variant.removesuffix("_fixed"), "#7f7f7f")


def _grid(plt, panels: int, rows: int):
  w, h = _inches(panels, rows)
  fig, axes = plt.subplots(rows, panels, figsize=(w, h), dpi=DPI, squeeze=False)
  # Margins in inches, so that labels fit whatever the number of panels.
  fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, top=1 - 0.35 / h,
                      bottom=(LEGEND + 0.45) / h, wspace=0.3, hspace=0.45)
  return fig, axes


def _legend(fig, axes) -> None:
  handles, labels = [], []
  for ax in axes.flat:
    for handle, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in labels:
        handles.append(handle)
        labels.append(lab)
  panels = axes.shape[1]
  ncol = min(len(labels), 2 * panels, 6)
  fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7.5 if panels == 1 else 8,
             frameon=False, borderaxespad=0.3)


def _continued(runs: dict[str, Any], name: str, key: str) -> tuple[list, list]:
  """``(steps, values)`` of ``runs[name][key]``; a rescue run starts from the last point
  of the noalign run it continues, so the two read as one line of training."""
  steps, values = list(runs[name]["step"]), list(runs[name][key])
  source = runs.get("noalign" + name[len("rescue"):]) if name.startswith("rescue") else None
  if source and source["step"]:
    steps, values = [source["step"][-1]] + steps, [source[key][-1]] + values
  return steps, values


def _bound_proxies(ax, delta: float) -> None:
  """Legend entries for the bound markers, drawn as the markers are but in a neutral
  colour: each marker takes its variant's colour, which the label says."""
  ax.plot([], [], marker="_", markersize=14, markeredgewidth=2.2, color="0.3",
          linestyle="none", label=f"test: bootstrap bound ({1 - delta:g})")
  ax.plot([], [], marker="v", markersize=6, color="0.3", linestyle="none",
          label=f"test: distribution-free bound ({1 - delta:g})")


def margin_trajectories(path: str, seeds: Sequence[dict[str, Any]]) -> tuple[int, int]:
  """``G_tau`` over training steps, one panel per seed.

  Each seed dict holds ``seed``, ``tau``, ``teacher_mi`` (train and test) and
  ``variants``: ``{name: {"step": [...], "train": [...], "test": [...],
  "bounds": MarginBounds dict or None}}``. Rescue is drawn from noalign's last point
  on (it continues that run). The certification threshold (0) and the best attainable
  margin ``I_T - tau`` (train) are drawn; the test split's population lower bounds, when
  present, hang below its final point (bar: bootstrap; triangle: distribution-free).
  """
  plt = pyplot()
  fig, axes = _grid(plt, len(seeds), 1)
  delta = None
  for ax, seed in zip(axes[0], seeds):
    runs = seed["variants"]
    for name, run in runs.items():
      for split in ("train", "test"):
        ax.plot(*_continued(runs, name, split), color=_color(name), markersize=3.5,
                linewidth=1.4, label=f"{name} ({split})", **SPLIT_STYLE[split])
      b = run.get("bounds")
      if b and run["step"]:
        last = run["step"][-1]
        # The bootstrap bound sits close under the sample margin: a wide, thick tick at it
        # (and the bar down to it) keeps it visible beside the final point.
        ax.errorbar([last], [b["sample"]], yerr=[[b["sample"] - b["bootstrap"]], [0.0]],
                    color=_color(name), capsize=0, linewidth=1.2, fmt="none")
        ax.plot([last], [b["bootstrap"]], marker="_", markersize=14, markeredgewidth=2.2,
                color=_color(name), linestyle="none")
        ax.plot([last], [b["distribution_free"]], marker="v", color=_color(name),
                markersize=6, linestyle="none")
        delta = b["delta"]
    ax.axhline(0.0, color="black", linewidth=0.9, label="certification threshold G_tau = 0")
    ax.axhline(seed["teacher_mi"]["train"] - seed["tau"], color="0.5", linewidth=0.9,
               linestyle=":", label="I_T - tau (train): the margin at L_TS = 0")
    ax.set_title(f"seed {seed['seed']}", fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel("G_tau (nats)")
    ax.grid(alpha=0.25)
  if delta is not None:
    _bound_proxies(axes[0, 0], delta)
  _legend(fig, axes)
  return _save(plt, fig, path)


def diagnostics_trajectories(path: str, seeds: Sequence[dict[str, Any]]) -> tuple[int, int]:
  """Student MI ``I_S`` (top row) and active units (bottom row) over steps, per seed.

  The seed dicts are those of :func:`margin_trajectories`, whose variant runs also hold
  ``student_mi_train`` / ``student_mi_test`` and ``active_units_train`` /
  ``active_units_test``.
  """
  plt = pyplot()
  fig, axes = _grid(plt, len(seeds), 2)
  for col, seed in enumerate(seeds):
    for row, (key, label) in enumerate((("student_mi", "student MI I_S (nats)"),
                                        ("active_units", "active latent units"))):
      ax = axes[row, col]
      for name in seed["variants"]:
        for split in ("train", "test"):
          ax.plot(*_continued(seed["variants"], name, f"{key}_{split}"), color=_color(name),
                  markersize=3.5, linewidth=1.4, label=f"{name} ({split})",
                  **SPLIT_STYLE[split])
      ax.set_title(f"seed {seed['seed']}", fontsize=10)
      ax.set_xlabel("training step")
      ax.set_ylabel(label)
      if key == "active_units":  # a count: whole-number ticks
        ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
      ax.grid(alpha=0.25)
  _legend(fig, axes)
  return _save(plt, fig, path)


def kl_stress(path: str, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
  """Paper 2's KL-stress test: the bare margin ``G_T`` against ``alpha_KL`` (mean ± std),
  one colour per model."""
  plt = pyplot()
  fig, axes = _grid(plt, 1, 1)
  ax = axes[0, 0]
  alphas = sorted({r["alpha_kl"] for r in rows})
  for variant in dict.fromkeys(r.get("variant", "full") for r in rows):
    for split in ("train", "test"):
      g = [np.array([r["bare_margin"] for r in rows if r["alpha_kl"] == a
                     and r["split"] == split and r.get("variant", "full") == variant])
           for a in alphas]
      ax.errorbar(alphas, [v.mean() for v in g], yerr=[v.std() for v in g], capsize=3,
                  color=_color(variant),
                  label=f"{PAPER2_NAMES.get(variant, variant)} ({split})", **SPLIT_STYLE[split])
  # G_T is the bare margin: certified where G_T > tau (G_tau = G_T - tau > 0).
  tau = float(rows[0]["tau"])
  ax.axhline(tau, color="black", linewidth=0.9, label=f"certification threshold G_T = tau = {tau:g}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("KL weight alpha_KL")
  ax.set_ylabel("G_T = I_T - L_TS (nats)")
  ax.grid(alpha=0.25)
  _legend(fig, axes)
  return _save(plt, fig, path)


def margin_energy_path(path: str, paths: dict[str, Any], rows: Sequence[dict[str, Any]]
                       ) -> tuple[int, int]:
  """Paper 2's margin-energy path (the codes ``alpha mu*``: witness margin against the
  energy ``alpha^2 E*``), one line per seed, with each trained model's point."""
  plt = pyplot()
  fig, axes = _grid(plt, 1, 1)
  ax = axes[0, 0]
  for i, (seed, p) in enumerate(sorted(paths.items())):
    ax.plot(p["energy"], p["margin"], color="grey", linewidth=1.2,
            label="path alpha mu*, alpha in [0, 1]" if i == 0 else None)
    if p["alpha_certified"] is not None:
      ax.plot([p["energy_certified"]], [0.0], marker="|", markersize=12, color="black",
              label="least certifiable alpha" if i == 0 else None)
  for variant in dict.fromkeys(r["variant"] for r in rows):
    for split in ("train", "test"):
      sel = [r for r in rows if r["variant"] == variant and r["split"] == split
             and "witness_energy" in r]
      if sel:
        ax.scatter([r["witness_energy"] for r in sel], [r["margin"] for r in sel],
                   color=_color(variant), marker="o" if split == "train" else "^", zorder=3,
                   label=f"{PAPER2_NAMES.get(variant, variant)} ({split})")
  ax.axhline(0.0, color="black", linewidth=0.9)
  ax.set_xlabel("energy in the witness subspace, 1/2 E||mu[:K-1]||^2")
  ax.set_ylabel("witness margin G_tau (nats)")
  ax.grid(alpha=0.25)
  _legend(fig, axes)
  return _save(plt, fig, path)


def escape_trajectories(path: str, runs: Sequence[tuple[int, Sequence[dict[str, float]]]]
                        ) -> tuple[int, int]:
  """Paper 2's escape runs (RST-VAE from the plain VAE's final state), one line per seed:
  the train split's witness margin, and the teacher-induced gradient norms, against steps."""
  plt = pyplot()
  fig, axes = _grid(plt, 2, 1)
  margin_ax, grad_ax = axes[0, 0], axes[0, 1]
  for i, (seed, points) in enumerate(runs):
    steps = [p["step"] for p in points]
    color = f"C{i % 10}"
    margin_ax.plot(steps, [p["margin"] for p in points], color=color, marker="o",
                   markersize=3, label=f"seed {seed}")
    grad_ax.plot(steps, [p["grad_norm_mu"] for p in points], color=color, marker="o",
                 markersize=3)
    grad_ax.plot(steps, [p["grad_norm_params"] for p in points], color=color, marker="^",
                 markersize=3, linestyle="--")
  grad_ax.plot([], [], color="black", marker="o", label="||grad_mu|| (per row, mean)")
  grad_ax.plot([], [], color="black", marker="^", linestyle="--",
               label="||grad_params|| (encoder)")
  margin_ax.axhline(0.0, color="black", linewidth=0.9)
  margin_ax.set_ylabel("train G_tau (nats)")
  grad_ax.set_ylabel("lambda_TS alignment gradient norm")
  grad_ax.set_yscale("log")
  for ax in (margin_ax, grad_ax):
    ax.set_xlabel("step (the VAE's final step first)")
    ax.grid(alpha=0.25)
  _legend(fig, axes)
  return _save(plt, fig, path)


def baselines_bars(path: str, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
  """Raw against post-hoc ``G_tau`` per method on the test split (paper 1, table 3):
  means over seeds with their standard deviation."""
  plt = pyplot()
  w, h = _inches(2, 1)
  fig, axes = plt.subplots(1, 1, figsize=(w, h), dpi=DPI, squeeze=False)
  fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, top=1 - 0.35 / h,
                      bottom=(LEGEND + 0.7) / h)  # room for the slanted method names
  ax = axes[0, 0]
  test = [r for r in rows if r["split"] == "test" and not r["stress_case"]]
  methods = list(dict.fromkeys(r["method"] for r in test))
  x = np.arange(len(methods))
  for offset, key, label, color in ((-0.2, "raw_margin", "raw head (trained in the run)",
                                     "#1f77b4"),
                                    (0.2, "posthoc_margin", "post-hoc linear head (frozen code)",
                                     "#ff7f0e")):
    values = [np.array([r[key] for r in test if r["method"] == m]) for m in methods]
    ax.bar(x + offset, [v.mean() for v in values], width=0.38, yerr=[v.std() for v in values],
           capsize=3, color=color, label=f"test G_tau, {label}")
  ax.axhline(0.0, color="black", linewidth=0.9, label="certification threshold")
  ax.set_xticks(x, methods, rotation=20, ha="right", fontsize=8)
  ax.set_ylabel("G_tau (nats)")
  ax.grid(alpha=0.25, axis="y")
  _legend(fig, axes)
  return _save(plt, fig, path)


def _save(plt, fig, path: str) -> tuple[int, int]:
  fig.savefig(path, dpi=DPI)
  size = tuple(int(v) for v in fig.canvas.get_width_height())
  plt.close(fig)
  return size
