"""The protocol runner (paper 1 and paper 2 tables) and paper 2's three models."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import certificate, data, simplex, teacher, train
from certvae_jax.experiments import protocol, report_page
from configs import digits_simplex
from tests.conftest import tiny_config


def tiny_simplex_config():
  c = digits_simplex.get_config("smoke")
  c.train.steps, c.train.prefit_steps = 30, 20
  c.train.checkpoint_every = c.eval.every = 30
  c.train.log_every = 10
  c.train.progress = False
  return c


def test_paper1_protocol_writes_rows_and_table(tmp_path):
  cfg = tiny_config()
  cfg.warmup.steps = cfg.train.steps = 20
  rows = protocol.run_protocol(cfg, str(tmp_path), seeds=[0])
  assert len(rows) == 3 * 2  # variants x splits
  assert {r["variant"] for r in rows} == {"full", "noalign", "rescue"}
  with open(tmp_path / "protocol.json") as fh:
    assert json.load(fh) == json.loads(json.dumps(rows))
  md = (tmp_path / "protocol.md").read_text()
  assert "| 0 | rescue | test |" in md and "Means over feasible seeds" in md
  # Corollary 2: each coarser property's margin, from the rows' summaries.
  full_test = next(r for r in rows if r["variant"] == "full" and r["split"] == "test")
  assert "| variant | G = K = 10 | G = 9 |" in md and "G = 2 |" in md
  assert f"| full | {full_test['margin']:+.3f} ± 0.000 | " in md


def test_paper2_models_smoke_and_table(tmp_path):
  cfg = tiny_simplex_config()
  rows = protocol.run_protocol(cfg, str(tmp_path), seeds=[0])
  assert [r["variant"] for r in rows[::2]] == ["vae", "full", "rst_prefit", "rst_alpha_prefit",
                                               "escape"]
  # RST-alpha-prefit regressed onto alpha mu*, alpha the balance of this run's weights.
  t_train, _ = train.Runner(cfg, str(tmp_path / "seed0")).teacher_targets()
  balance = simplex.balance_alpha(t_train, 5.0, cfg.train.lambda_ts, cfg.train.alpha_kl)
  alpha_row = next(r for r in rows if r["variant"] == "rst_alpha_prefit")
  assert 0 < balance < 1 and alpha_row["prefit_alpha"] == pytest.approx(balance, abs=1e-6)
  d = data.load_dataset("digits")
  expected_mi = {split: float(certificate.teacher_mi(teacher.label_smoothed(y, 10, 0.05)))
                 for split, y in (("train", d.y_train), ("test", d.y_test))}
  for r in rows:
    assert r["analytic_code_energy"] == pytest.approx(0.4469, abs=5e-5)
    assert r["teacher_mi"] == pytest.approx(expected_mi[r["split"]], abs=1e-5)
  md = (tmp_path / "protocol.md").read_text()
  assert "| RST-prefit | test |" in md and "E*" in md
  wd = tmp_path / "seed0"
  # The fixed witness has no parameters: the certificate cannot come from a trained head.
  runner = train.Runner(cfg, str(wd))
  assert "head" not in runner.fresh_state(10, 0).params
  # The prefit phase ran before RST-prefit and moved the code towards the analytic code.
  prefit_rows = [json.loads(l) for l in open(wd / "prefit" / "metrics.jsonl")]
  assert prefit_rows[-1]["step"] == cfg.train.prefit_steps
  s = json.load(open(wd / "rst_prefit" / "summary.json"))
  assert "recon_alignment" not in s["test"]  # a label-smoothed teacher has no T(x_hat)
  pred = np.load(wd / "rst_prefit" / "predictions.npz")
  r = certificate.report(pred["test_teacher"], pred["test_witness"])
  assert s["test"]["margin"] == pytest.approx(float(r.margin), abs=2e-5)
  # The report of a paper-2 directory: its three models' trajectories and paper 2's table.
  files = report_page.render(str(tmp_path))
  report_md = open(files["report.md"]).read()
  assert "## Paper 2 table" in report_md and "| RST-prefit | test |" in report_md
  assert "| label_smoothed |" in report_md  # the teacher QC row of a label-smoothed teacher
  # Paper 2's margin-energy path: each model's point, the path per seed, its figure.
  for r in rows:
    mu = np.load(wd / r["phase"] / "predictions.npz")[f"{r['split']}_mu"]
    assert r["witness_energy"] == pytest.approx(0.5 * np.mean(np.sum(mu[:, :9]**2, 1)), rel=1e-6)
    assert 0 < r["path_alpha_certified"] < 1
  paths = json.load(open(tmp_path / "margin_energy_path.json"))
  assert paths["0"]["alpha_certified"] == rows[0]["path_alpha_certified"]
  assert paths["0"]["energy"][-1] == pytest.approx(rows[0]["analytic_code_energy"], rel=1e-4)
  assert "## Paper 2: the margin-energy path" in report_md
  assert "## Paper 2: escape trajectories" in report_md
  assert os.path.isfile(files["escape_trajectories.png"])
  assert os.path.isfile(files["margin_energy_path.png"])


def test_kl_stress_table(tmp_path):
  cfg = tiny_simplex_config()
  rows = protocol.run_kl_stress(cfg, str(tmp_path), seeds=[0], alphas=[1.0, 4.0])
  assert sorted({r["alpha_kl"] for r in rows}) == [1.0, 4.0]
  assert [r["variant"] for r in rows[:6:2]] == ["vae", "full", "rst_alpha_prefit"]
  md = (tmp_path / "kl_stress.md").read_text()
  assert md.count("\n| 4 | ") == 6 and "escape force" in md  # 3 models x 2 splits
  assert "| 4 | RST-α-prefit | test | 1 |" in md
  files = report_page.render(str(tmp_path))  # a KL-stress directory: its plot and table
  assert set(files) == {"kl_stress.png", "report.md", "report.html"}
  assert md in open(files["report.md"]).read()
  with pytest.raises(ValueError, match="KL weights"):
    protocol.run_kl_stress(cfg, str(tmp_path), seeds=[0], alphas=[-1.0])


def test_paper2_mode_errors(tmp_path):
  cfg = tiny_config()
  with pytest.raises(ValueError, match="needs --config.model.head=simplex"):
    train.Runner(cfg, str(tmp_path)).run_mode("rst_prefit")
  cfg = tiny_simplex_config()
  cfg.model.latent_dim = 4
  with pytest.raises(ValueError, match="latent_dim >= K-1 = 9"):
    train.Runner(cfg, str(tmp_path / "b")).run_mode("full")


def test_rst_alpha_prefit_takes_a_fixed_scale_and_refuses_a_bad_one(tmp_path):
  cfg = tiny_simplex_config()
  cfg.train.prefit_alpha = "0.5"
  summary = train.Runner(cfg, str(tmp_path)).run_mode("rst_alpha_prefit")
  prefit = json.load(open(tmp_path / "prefit_alpha" / "summary.json"))
  assert prefit["weights"]["code_scale"] == 0.5 and summary["mode"] == "rst_alpha_prefit"
  for bad in ("1.5", "-0.1", "nan", "half"):
    cfg.train.prefit_alpha = bad
    with pytest.raises(ValueError, match="config.train.prefit_alpha: expected 'balance' or a "
                                         "number in"):
      train.Runner(cfg, str(tmp_path / "bad"))


def test_escape_starts_from_the_vae_run_and_records_its_trajectory(tmp_path):
  cfg = tiny_simplex_config()
  runner = train.Runner(cfg, str(tmp_path))
  with pytest.raises(ValueError, match="escape restarts from the final vae checkpoint"):
    runner.run_mode("escape")
  vae = runner.run_mode("vae")
  escape = runner.run_mode("escape")
  points = escape["escape_trajectory"]
  start = vae["step"]
  assert points[0]["step"] == start and points[0]["margin"] == pytest.approx(
      vae["train"]["margin"], abs=1e-6)  # the low-margin start is the vae's final state
  assert points[-1]["step"] == start + cfg.train.steps == escape["step"]
  assert points[-1]["margin"] > points[0]["margin"]  # the witness escapes
  assert all(p["grad_norm_mu"] > 0 and p["grad_norm_params"] > 0 for p in points)
  assert "rescue_diagnostics" in escape  # its start, as a rescue's


def test_the_escape_gradient_norm_is_the_autodiff_gradient_of_each_row():
  from certvae_jax.simplex import escape  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  k, beta, lam = 5, 3.0, 2.0
  t = rng.dirichlet(np.ones(k), 30)
  mu = rng.normal(size=(30, k - 1))

  def row_loss(m, ti):
    logits = simplex.witness_logits(m[None], k, beta)[0]
    return lam * jnp.sum(ti * (jnp.log(ti) - jax.nn.log_softmax(logits)))
  grads = jax.vmap(jax.grad(row_loss))(jnp.asarray(mu), jnp.asarray(t))
  s = jax.nn.softmax(simplex.witness_logits(jnp.asarray(mu), k, beta), axis=-1)
  assert escape.mean_gradient_norm_mu(t, s, beta, lam) == pytest.approx(
      float(np.mean(np.linalg.norm(np.asarray(grads), axis=1))), rel=1e-5)


def test_the_fixed_teacher_control_holds_one_teacher_while_the_training_seed_changes(tmp_path):
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel
  cfg = tiny_config()
  cfg.protocol.variants = ("full",)
  cfg.protocol.teacher_seed = 0
  rows = protocol.run_protocol(cfg, str(tmp_path), seeds=[0, 1])
  assert {r["seed"] for r in rows} == {0, 1}
  assert len({r["teacher_id"] for r in rows}) == 1  # one teacher: seed 0's
  own = json.load(open(tmp_path / "seed0" / "teacher" / "teacher.json"))
  assert rows[0]["teacher_id"] == own["teacher_id"]
  assert (tmp_path / "protocol_fixed_teacher.json").is_file()
  assert not (tmp_path / "protocol.json").exists()  # never pooled with the per-seed search
  seed1 = tmp_path / "teacher_seed0" / "seed1"
  assert (seed1 / "full" / "summary.json").is_file() and not (seed1 / "teacher").exists()
  assert json.load(open(seed1 / "full" / "summary.json"))["seed"] == 1
  cfg.protocol.teacher_seed = -2
  with pytest.raises(ValueError, match="config.protocol.teacher_seed: expected a seed >= 0"):
    protocol.run_protocol(cfg, str(tmp_path), seeds=[0])
  with pytest.raises(ValueError, match="protocol.teacher_seed: seed 5's teacher is not in"):
    cfg.protocol.teacher_seed = -1
    train.Runner(cfg, str(tmp_path / "x"), shared_teacher=(str(tmp_path / "none"), 5)
                 ).ensure_teacher()
