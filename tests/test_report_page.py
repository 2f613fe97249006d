"""The report of a protocol directory, and TensorBoard event files beside metrics.jsonl."""

import glob
import json
import os
import shutil
import struct

import numpy as np
import pytest

from certvae_jax.experiments import figures, protocol, report_page
from certvae_jax.training import writers
from tests import tensorboard_events
from tests.conftest import tiny_config

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def protocol_dir(tmp_path_factory):
  """Two seeds of the smoke protocol, with TensorBoard event files on."""
  root = str(tmp_path_factory.mktemp("protocol"))
  c = tiny_config()
  c.log.tensorboard = True
  protocol.run_protocol(c, root, seeds=list(SEEDS))
  return root


def png_size(path: str) -> tuple[int, int]:
  with open(path, "rb") as fh:
    head = fh.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return struct.unpack(">II", head[16:24])


def md_tables(text: str) -> dict[str, list[dict[str, str]]]:
  """``{section heading: rows as {column: cell}}`` of every pipe table in ``text``."""
  out, heading, lines = {}, None, text.splitlines()
  i = 0
  while i < len(lines):
    if lines[i].startswith("## "):
      heading = lines[i][3:]
    if lines[i].startswith("|") and heading not in out:
      cols = [c.strip() for c in lines[i].strip("|").split("|")]
      rows, i = [], i + 2
      while i < len(lines) and lines[i].startswith("|"):
        rows.append(dict(zip(cols, (c.strip() for c in lines[i].strip("|").split("|")))))
        i += 1
      out[heading] = rows
      continue
    i += 1
  return out


def mean_std(cell: str) -> tuple[float, float]:
  mean, std = cell.split(" ± ")
  return float(mean), float(std)


def test_report_files_figures_and_every_number(protocol_dir, tmp_path):
  files = report_page.render(protocol_dir, out_dir=str(tmp_path))
  assert set(files) == {"report.md", "report.html", "margin_trajectories.png", "diagnostics.png"}
  assert png_size(files["margin_trajectories.png"]) == figures.figure_size(len(SEEDS), 1)
  assert png_size(files["diagnostics.png"]) == figures.figure_size(len(SEEDS), 2)
  html = open(files["report.html"]).read()
  assert html.count("data:image/png;base64,") == 2 and "<table>" in html
  tables = md_tables(open(files["report.md"]).read())
  summaries = {(s, v): json.load(open(os.path.join(protocol_dir, f"seed{s}", v, "summary.json")))
               for s in SEEDS for v in ("full", "noalign", "rescue")}
  for row in tables["Means over seeds"]:
    vals = [summaries[(s, row["variant"])][row["split"]] for s in SEEDS]
    g = np.array([v["margin"] for v in vals])
    assert mean_std(row["G_tau"]) == pytest.approx((g.mean(), g.std()), abs=6e-4)
    assert row["certified"] == f"{sum(v['certified'] for v in vals)}/{len(SEEDS)}"
  assert len(tables["Means over seeds"]) == 6
  for row in tables["Tau sensitivity (paper 1, appendix B)"]:
    for tau in ("0", "0.05", "0.15"):
      g = [summaries[(s, row["variant"])][row["split"]]["tau_sensitivity"][tau] for s in SEEDS]
      assert mean_std(row[f"G_tau, tau = {tau}"])[0] == pytest.approx(np.mean(g), abs=6e-4)
  for row in tables["Population lower bounds (test split)"]:
    b = summaries[(int(row["seed"]), row["variant"])]["test"]["bounds"]
    for col, key in (("G_tau (test rows)", "sample"), ("bootstrap bound", "bootstrap"),
                     ("distribution-free bound", "distribution_free")):
      assert float(row[col]) == pytest.approx(b[key], abs=6e-4)
  recon = tables["Reconstruction side (diagnostics, not a certificate)"]
  assert len(recon) == 6
  for row in recon:
    vals = [summaries[(s, row["variant"])][row["split"]] for s in SEEDS]
    for col, key in (("L_rec", "recon_alignment"), ("reconstruction margin", "recon_margin"),
                     ("KL(s ‖ T(x_hat))", "witness_recon_kl")):
      assert mean_std(row[col])[0] == pytest.approx(np.mean([v[key] for v in vals]), abs=6e-4)
  for row in tables["Teacher quality control (selected teacher per seed)"]:
    info = json.load(open(os.path.join(protocol_dir, f"seed{row['seed']}", "teacher",
                                       "teacher.json")))
    assert float(row["I_T"]) == pytest.approx(info["selected_scores"]["teacher_mi"], abs=6e-4)
    assert float(row["min mass"]) == pytest.approx(info["selected_scores"]["min_mass"], abs=6e-5)
  assert len(tables["Teacher candidate grid"]) == len(SEEDS)  # the smoke grid: one candidate


def test_report_from_a_partial_directory(protocol_dir, tmp_path):
  root = str(tmp_path / "partial")
  shutil.copytree(os.path.join(protocol_dir, "seed0"), os.path.join(root, "seed0"),
                  ignore=shutil.ignore_patterns("checkpoints"))
  shutil.rmtree(os.path.join(root, "seed0", "rescue"))
  shutil.rmtree(os.path.join(root, "seed0", "noalign"))
  files = report_page.render(root)
  assert png_size(files["margin_trajectories.png"]) == figures.figure_size(1, 1)
  tables = md_tables(open(files["report.md"]).read())
  assert [r["variant"] for r in tables["Means over seeds"]] == ["full", "full"]


def test_report_of_an_empty_directory_says_so(tmp_path):
  with pytest.raises(ValueError, match="no finished run"):
    report_page.render(str(tmp_path))


@pytest.mark.parametrize("phase", ["warmup", "full", "rescue"])
def test_tensorboard_holds_the_scalars_of_metrics_jsonl(protocol_dir, phase):
  tensorboard_events.assert_same_as_metrics_jsonl(os.path.join(protocol_dir, "seed0", phase))


def test_tensorboard_rewind_drops_the_later_points_and_keeps_the_earlier_file(tmp_path):
  """A rewind within the same second as the first file: tensorboardX would name the second
  file as the first (and truncate it) without the writer's suffix."""
  board = writers.TensorBoardWriter(str(tmp_path))
  board.write_scalars(1, {"a": 1.0})
  board.write_scalars(2, {"a": 2.0})
  board.rewind(1)
  board.write_scalars(2, {"a": 3.0})
  board.close()
  assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 2
  assert tensorboard_events.scalars(str(tmp_path)) == {"a": [(1, 1.0), (2, 3.0)]}


def test_missing_tensorboardx_names_the_extra(monkeypatch):
  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(writers, "_has_tensorboardx", lambda: False)
  c = tiny_config()
  c.log.tensorboard = True
  with pytest.raises(ValueError, match=r'pip install -e "\.\[tensorboard\]"'):
    train.make_context(c)
