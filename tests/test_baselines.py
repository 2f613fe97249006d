"""Paper 1's baselines (table 3) and the post-hoc head that says where a collapse is."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import certificate, train
from certvae_jax.baselines import modes as baseline_modes, objectives as baseline_objectives
from certvae_jax.evaluation import posthoc, splits
from certvae_jax.experiments import baselines, figures, report_page
from tests.conftest import tiny_config
from tests.test_report_page import png_size


def test_free_bits_clamps_the_batch_mean_kl_per_dimension_and_its_gradient():
  mu = jnp.array([[0.0, 2.0, 0.1], [0.0, 0.0, -0.1]])
  logvar = jnp.zeros_like(mu)
  # KL_d = mean_b mu^2 / 2: [0, 1.0, 0.005]; clamped at 0.25: [0.25, 1.0, 0.25]
  assert float(baseline_objectives.free_bits_kl(mu, logvar, 0.25)) == pytest.approx(1.5)
  g = jax.grad(lambda m: baseline_objectives.free_bits_kl(m, logvar, 0.25))(mu)
  np.testing.assert_allclose(g[:, 0], 0.0)   # below the threshold: no gradient
  np.testing.assert_allclose(g[:, 2], 0.0)
  np.testing.assert_allclose(g[:, 1], [1.0, 0.0])  # d/dmu of mean_b mu^2/2 = mu / B


def test_kl_anneal_schedule_ramps_linearly_then_stays():
  c = tiny_config()
  c.train.steps = 40
  c.baselines.anneal_start, c.baselines.anneal_steps = 0.2, 0  # 0: half the run = 20
  schedule = baseline_modes.kl_anneal_schedule(c)
  w = {"alpha_kl": jnp.float32(1.0), "lambda_ts": jnp.float32(0.0)}
  for step, expected in ((0, 0.2), (10, 0.6), (20, 1.0), (35, 1.0)):
    out = schedule(w, jnp.int32(step))
    assert float(out["alpha_kl"]) == pytest.approx(expected)
    assert float(out["lambda_ts"]) == 0.0


def test_posthoc_head_reaches_the_optimum_when_a_linear_head_matches_the_teacher():
  rng = np.random.default_rng(0)
  mu = rng.normal(size=(600, 6)).astype(np.float32) * np.array([1, 1, 1, 1, 1e-3, 50])
  logits = mu @ rng.normal(size=(6, 4)) * np.array([1, 1, 1, 1]) + rng.normal(size=4)
  t = np.exp(logits - logits.max(1, keepdims=True))
  t /= t.sum(1, keepdims=True)
  out = posthoc.posthoc_metrics(mu, t, {"train": (mu, t)}, tau=0.05)["train"]
  assert out["posthoc_margin"] == pytest.approx(float(certificate.teacher_mi(t)) - 0.05, abs=1e-4)
  assert out["posthoc_certified"]


def test_posthoc_head_of_a_constant_code_is_the_constant_student():
  t = np.random.default_rng(1).dirichlet(np.ones(5), size=300)
  mu = np.ones((300, 3), np.float32)  # a collapsed code: the best head is Tbar
  out = posthoc.posthoc_metrics(mu, t, {"train": (mu, t)}, tau=0.05)["train"]
  assert out["posthoc_margin"] == pytest.approx(-0.05, abs=1e-5)
  assert out["posthoc_student_mi"] == pytest.approx(0.0, abs=1e-6)


def test_the_posthoc_head_is_fitted_on_a_fixed_subset_and_certified_on_every_row():
  rng = np.random.default_rng(2)
  arrays = {}
  for sp, n in (("train", 500), ("test", 120)):
    mu = rng.normal(size=(n, 3)).astype(np.float32)
    logits = mu @ np.array([[2.0, -1.0, 0.0], [0.0, 1.5, -1.5], [1.0, 0.0, 1.0]])
    t = np.exp(logits - logits.max(1, keepdims=True))
    t = 0.6 * t / t.sum(1, keepdims=True) + 0.4 * rng.dirichlet(np.ones(3), size=n)  # noisy:
    witness = np.full((n, 3), 1 / 3, np.float32)  # the best head depends on the rows fitted
    arrays[sp] = {"mu": mu, "teacher": t.astype(np.float32), "witness": witness}

  def final(fit_rows):
    cfg = tiny_config().eval
    cfg.posthoc_fit_rows = fit_rows
    found = {sp: {"certified": False} for sp in arrays}
    splits.final_analyses(found, arrays, cfg, with_teacher=True)
    return found

  rows = splits.probe_subset(500, 200)
  expected = posthoc.posthoc_metrics(
      arrays["train"]["mu"][rows], arrays["train"]["teacher"][rows],
      {sp: (a["mu"], a["teacher"]) for sp, a in arrays.items()}, tau=0.05, max_iter=500)
  subset, every = final(200), final(0)
  for sp in arrays:
    assert subset[sp]["posthoc_fit_rows"] == 200 and every[sp]["posthoc_fit_rows"] == 500
    for key, value in expected[sp].items():
      assert subset[sp][key] == value, (sp, key)
  assert final(500)["test"] == every["test"]  # a limit of at least n fits every row
  assert subset["test"]["posthoc_margin"] != every["test"]["posthoc_margin"]


@pytest.mark.parametrize("raw, post, verdict", [(True, True, "none"), (True, False, "none"),
                                                (False, True, "witness"),
                                                (False, False, "code")])
def test_collapse_rule(raw, post, verdict):
  assert posthoc.collapse(raw, post) == verdict


def test_baselines_table_end_to_end(tmp_path):
  c = tiny_config()
  rows = baselines.run_baselines(c, str(tmp_path), seeds=[0])
  methods = ["full", "noalign", "vanilla_vae", "beta_vae_0.5", "beta_vae_4", "kl_anneal",
             "free_bits", "vq_vae", "gmvae"]
  assert list(dict.fromkeys(r["method"] for r in rows)) == methods
  with open(tmp_path / "baselines.json") as fh:
    assert json.load(fh) == json.loads(json.dumps(rows))
  for r in rows:
    assert r["raw_margin"] == pytest.approx(r["teacher_mi"] - r["tau"] - r["alignment"],
                                            abs=1e-5)
    assert r["collapse"] in ("none", "witness", "code")
    assert {"raw_student_mi", "posthoc_margin", "posthoc_student_mi", "psnr", "active_units",
            "kl", "probe_accuracy", "stress_case"} <= set(r)
  md = (tmp_path / "baselines.md").read_text()
  assert "| free_bits | test | 1 |" in md and "Paper 1 on CIFAR-100" in md
  # Corollary 2 for every method: the test split's margin at each coarser property.
  prop = md[md.index("G_tau of each coarser property"):md.index("Paper 1 on CIFAR-100")]
  for r in rows:
    if r["split"] == "test":
      assert f"| {r['method']} | {r['raw_margin']:+.3f}" in prop
      assert min(int(g) for g in r["property_margins"]) == 2
  # The report of the directory draws raw against post-hoc margins and carries the table.
  files = report_page.render(str(tmp_path))
  assert png_size(files["baselines.png"]) == figures.figure_size(2, 1)
  assert md in open(files["report.md"]).read()
  # Each baseline is its own mode: its summary records the KL it trained with.
  s = json.load(open(tmp_path / "seed0" / "free_bits" / "summary.json"))
  assert s["weights"] == {"alpha_kl": 1.0, "lambda_ts": 0.0, "lambda_bal": 1.0}
  s = json.load(open(tmp_path / "seed0" / "beta_vae_0.5" / "summary.json"))
  assert s["weights"]["alpha_kl"] == 0.5 and s["weights"]["lambda_ts"] == 0.0
  metrics = [json.loads(l) for l in open(tmp_path / "seed0" / "free_bits" / "metrics.jsonl")]
  logged = [r for r in metrics if "train_step/kl_used" in r]
  assert logged and all(r["train_step/kl_used"] >= 16 * 0.25 - 1e-4 for r in logged)


def test_a_baseline_runs_alone_from_the_command_line(tmp_path):
  s = train.train(tiny_config(), "kl_anneal", str(tmp_path))
  assert s["mode"] == "kl_anneal" and math.isfinite(s["test"]["posthoc_margin"])


def test_quantize_and_vq_terms_with_the_straight_through_gradient():
  codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]])
  z_e = jnp.array([[0.9, 0.8], [-1.5, 0.0], [0.1, -0.2]])
  e, index = baseline_objectives.quantize(z_e, codebook)
  np.testing.assert_array_equal(index, [1, 2, 0])
  z_q, book, commit = baseline_objectives.vq_terms(z_e, e)
  np.testing.assert_allclose(z_q, e)
  expected = float(np.mean(np.square(np.asarray(z_e) - np.asarray(e))))
  assert float(book) == pytest.approx(expected) and float(commit) == pytest.approx(expected)
  # Straight through: d f(z_q) / d z_e = f'(z_q); the codebook loss moves only the codes,
  # the commitment only the encoder.
  w = jnp.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])
  g = jax.grad(lambda z: jnp.sum(w * baseline_objectives.vq_terms(z, e)[0]))(z_e)
  np.testing.assert_allclose(g, w)
  assert float(jnp.abs(jax.grad(lambda z: baseline_objectives.vq_terms(z, e)[1])(z_e)).max()) == 0.0
  assert float(jnp.abs(jax.grad(lambda c: baseline_objectives.vq_terms(z_e, c)[2])(e)).max()) == 0.0
  np.testing.assert_allclose(jax.grad(lambda c: baseline_objectives.vq_terms(z_e, c)[1])(e),
                             2 * (e - z_e) / z_e.size, rtol=1e-6)


def test_vq_vae_run_keeps_its_codebook_across_a_restart(tmp_path):
  c = tiny_config()
  whole = train.train(c, "vq_vae", str(tmp_path / "whole"))
  assert whole["test"]["codes_used"] >= 1 and whole["test"]["kl"] == 0.0
  assert 1.0 <= whole["test"]["codebook_perplexity"] <= whole["test"]["codes_used"]
  c.train.steps = 20
  train.train(c, "vq_vae", str(tmp_path / "split"))
  c.train.steps = 40
  resumed = train.train(c, "vq_vae", str(tmp_path / "split"))
  assert resumed["test"] == whole["test"] and resumed["train"] == whole["train"]


def test_gmvae_elbo_against_numpy_on_a_tiny_case():
  from certvae_jax.models.vae import TeacherGuidedVAE, build_model, init_params  # pylint: disable=import-outside-toplevel
  c = tiny_config()
  c.model.latent_dim, c.model.hidden, c.baselines.gmvae_components = 3, (8,), 4
  model = build_model(c.model, 6, 5)
  obj = baseline_objectives.gmvae(model, c)
  params = dict(init_params(model, jax.random.PRNGKey(0), 6, 5),
                objective=obj.init_params(jax.random.PRNGKey(1)))
  params["objective"]["offset"] = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (4, 3))
  rng_np = np.random.default_rng(0)
  x = (rng_np.random((7, 6)) > 0.5).astype(np.float32)
  t = rng_np.dirichlet(np.ones(5), size=7).astype(np.float32)
  weights = {"alpha_kl": jnp.float32(1.0), "lambda_ts": jnp.float32(0.0),
             "lambda_bal": jnp.float32(0.0)}
  total, terms = obj.loss(params, {"x": x, "t": t}, jax.random.PRNGKey(3), weights)

  own = {k: np.asarray(v, np.float64) for k, v in params["objective"].items()}
  mu, logvar = (np.asarray(a, np.float64) for a in
                model.apply({"params": params}, x, method=TeacherGuidedVAE.encode))
  logits = mu @ own["q_kernel"] + own["q_bias"]
  q = np.exp(logits - logits.max(1, keepdims=True))
  q /= q.sum(1, keepdims=True)
  eps = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (7, 3)), np.float64)
  rec, kl_z = np.zeros(7), np.zeros(7)
  for y in range(4):
    m = mu + own["offset"][y]
    z = m + np.exp(0.5 * logvar) * eps
    out = np.asarray(model.apply({"params": params}, z.astype(np.float32), t,
                                 method=TeacherGuidedVAE.decode), np.float64)
    nll = np.sum(np.logaddexp(0, out) - x * out, axis=1)  # Bernoulli logits
    kl = 0.5 * np.sum(own["prior_logvar"][y] - logvar + (np.exp(logvar) + (m - own["prior_mu"][y])
                                                          ** 2) / np.exp(own["prior_logvar"][y])
                      - 1, axis=1)
    rec += q[:, y] * nll
    kl_z += q[:, y] * kl
  kl_y = np.sum(q * np.log(q * 4), axis=1)
  assert float(terms["rec"]) == pytest.approx(rec.mean(), rel=1e-4)
  assert float(terms["kl_categorical"]) == pytest.approx(kl_y.mean(), rel=1e-4, abs=1e-6)
  assert float(terms["kl"]) == pytest.approx((kl_z + kl_y).mean(), rel=1e-4)
  assert float(total) == pytest.approx(rec.mean() + (kl_z + kl_y).mean(), rel=1e-4)


def test_gmvae_runs_and_reports_its_categorical_kl(tmp_path):
  s = train.train(tiny_config(), "gmvae", str(tmp_path))
  assert s["mode"] == "gmvae" and s["test"]["kl_categorical"] >= 0
  assert s["collapse"] in ("none", "witness", "code")
