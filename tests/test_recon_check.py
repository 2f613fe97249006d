"""The reconstruction-side check (paper 1, appendix I) against a float64 NumPy reference."""

import jax
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from certvae_jax import objectives
from certvae_jax.evaluation import recon_check, splits
from certvae_jax.models.vae import TeacherGuidedVAE, build_model, init_params
from certvae_jax.teachers.frozen import FrozenTeacher, freeze_sklearn_gmm
from certvae_jax.training import step as step_lib
from tests.conftest import tiny_config

K = 4


def _log_resp(gm: GaussianMixture, f: np.ndarray) -> np.ndarray:
  """log p(k | f) of a diagonal GMM in float64."""
  var = gm.covariances_
  log_dens = -0.5 * (np.log(2 * np.pi * var)[None] + (f[:, None, :] - gm.means_[None]) ** 2
                     / var[None]).sum(-1)
  w = log_dens + np.log(gm.weights_)[None]
  return w - logsumexp(w, axis=1, keepdims=True)


def _kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
  return (np.exp(log_p) * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("reads_teacher", [False, True])
def test_per_example_matches_float64_reference(reads_teacher):
  c = tiny_config()
  c.model.decoder_reads_teacher = reads_teacher
  model = build_model(c.model, 64, K)
  params = init_params(model, jax.random.PRNGKey(0), 64, K)
  warm = init_params(model, jax.random.PRNGKey(1), 64, K)  # the teacher's warm-up encoder
  x = np.random.default_rng(0).random((200, 64)).astype(np.float32)

  def encode(p, inputs):
    return np.asarray(model.apply({"params": p}, inputs, method=TeacherGuidedVAE.encode)[0],
                      np.float64)

  gm = GaussianMixture(K, covariance_type="diag", random_state=0).fit(encode(warm, x))
  teacher = FrozenTeacher(encoder_params=warm["encoder"], gmm=freeze_sklearn_gmm(gm))

  def encoder_apply(v, inputs):
    return model.apply({"params": {"encoder": v["params"]}}, inputs,
                       method=TeacherGuidedVAE.encode)

  got = jax.jit(recon_check.per_example(model, encoder_apply))(params, teacher, x)

  log_t = _log_resp(gm, encode(warm, x))
  mu = encode(params, x)
  out = model.apply({"params": params}, mu.astype(np.float32), np.exp(log_t).astype(np.float32),
                    method=TeacherGuidedVAE.decode)
  x_hat = 1 / (1 + np.exp(-np.asarray(out, np.float64)))
  log_t_hat = _log_resp(gm, encode(warm, x_hat.astype(np.float32)))
  log_s = log_softmax(np.asarray(model.apply({"params": params}, mu.astype(np.float32),
                                             method=TeacherGuidedVAE.witness_logits),
                                 np.float64), axis=1)
  np.testing.assert_allclose(got["recon_teacher_kl"], _kl(log_t, log_t_hat), rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(got["witness_recon_kl"], _kl(log_s, log_t_hat), rtol=1e-3, atol=1e-4)
  assert np.all(np.isfinite(got["recon_teacher_kl"]))


def test_metrics_are_means_and_the_margin_uses_the_splits_teacher_mi():
  arrays = {"recon_teacher_kl": np.array([0.1, 0.3]), "witness_recon_kl": np.array([1.0, 2.0])}
  m = recon_check.ReconstructionCheck.metrics(arrays, teacher_mi=2.0, tau=0.05)
  assert m == pytest.approx({"recon_alignment": 0.2, "recon_margin": 1.75,
                             "witness_recon_kl": 1.5})


def _split_and_eval_step(seed: int):
  """``(config, params, eval_step, x, t)``: the tiny config's teacher-guided model at its
  initial parameters, and 300 random uint8 rows with random teacher rows."""
  c = tiny_config()
  model = build_model(c.model, 64, K)
  params = init_params(model, jax.random.PRNGKey(0), 64, K)
  eval_step = step_lib.make_eval_step(objectives.build("teacher_guided", model, c), None)
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (300, 64)).astype(np.uint8)
  t = rng.dirichlet(np.ones(K), 300).astype(np.float32)
  return c, params, eval_step, x, t


def test_the_reconstruction_side_runs_on_a_fixed_random_subset_and_the_certificate_on_every_row():
  """``eval.reconstruction_check_rows``: the probe and the decoder's outputs (rec, PSNR)
  see that many rows (the same ones at every evaluation); the certificate and the latent
  statistics still see the whole split."""
  c, params, eval_step, x, t = _split_and_eval_step(seed=0)

  class RowProbe:  # records which rows it saw: its one per-example output is the row itself
    @staticmethod
    def batch(_, xb):
      return {"first_pixel": xb[:, 0]}

    @staticmethod
    def metrics(arrays, teacher_mi, tau):
      del teacher_mi, tau
      return {"probe_mean": float(np.mean(arrays["first_pixel"], dtype=np.float64))}

  def run(limit):
    c.eval.reconstruction_check_rows = limit
    return splits.evaluate_split(eval_step, params, x, t, c.eval, jax.random.PRNGKey(0),
                                 probes=[RowProbe()])

  full_m, full_a = run(0)
  sub_m, sub_a = run(70)
  rows = splits.probe_subset(300, 70)
  assert len(rows) == 70 and len(set(rows.tolist())) == 70
  np.testing.assert_array_equal(rows, splits.probe_subset(300, 70))  # fixed across calls
  np.testing.assert_array_equal(full_a["first_pixel"], x[:, 0])
  np.testing.assert_array_equal(sub_a["first_pixel"], x[rows, 0])
  assert sub_m["probe_mean"] == pytest.approx(x[rows, 0].mean())
  assert (full_m["reconstruction_check_rows"], sub_m["reconstruction_check_rows"]) == (300, 70)
  for key in ("margin", "teacher_mi", "alignment", "student_mi", "kl", "active_units"):
    assert sub_m[key] == full_m[key], key
  assert (full_m["reconstruction_rows"], sub_m["reconstruction_rows"]) == (300, 70)
  assert len(sub_a["mu"]) == 300 and len(sub_a["rec"]) == 70
  np.testing.assert_allclose(sub_a["sq_err"], full_a["sq_err"][rows], rtol=1e-6)
  assert sub_m["psnr"] != full_m["psnr"]
  assert splits.probe_subset(300, 300) is None and splits.probe_subset(300, 0) is None


def test_the_linear_probe_is_fitted_on_a_fixed_random_subset_and_scored_on_every_row():
  """``eval.probe_fit_rows``: the probe's fit reads that many training rows (its iterations
  grow with the rows); both accuracies read every row of their split."""
  c, params, eval_step, x, t = _split_and_eval_step(seed=1)
  y = (x[:, 0] > 127).astype(int) ^ (np.arange(300) % 7 == 0)  # learnable, with label noise

  def run(limit):
    c.eval.probe_fit_rows = limit
    return splits.evaluate_splits(eval_step, params, [("train", x, t), ("test", x[:90], t[:90])],
                                  c.eval, labels={"train": y, "test": y[:90]})

  (every, _), (subset, arrays) = run(0), run(80)
  rows = splits.probe_subset(300, 80)
  mu = np.asarray(arrays["train"]["mu"], np.float64)
  by_hand = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
  by_hand.fit(mu[rows], y[rows])
  assert subset["train"]["probe_accuracy"] == by_hand.score(mu, y)
  assert subset["test"]["probe_accuracy"] == by_hand.score(
      np.asarray(arrays["test"]["mu"], np.float64), y[:90])
  assert [m["probe_fit_rows"] for m in (*subset.values(), *every.values())] == [80, 80, 300, 300]
  assert run(300)[0]["train"] == every["train"]  # a limit of at least n fits every row


def test_with_every_row_in_the_subset_one_pass_reads_them_all():
  """An objective that evaluates without the decoder still runs its whole evaluation in one
  pass when the reconstruction side reads every row: the numbers of an objective without
  ``evaluate_latents``, to the bit."""
  c = tiny_config()
  model = build_model(c.model, 64, K)
  params = init_params(model, jax.random.PRNGKey(0), 64, K)
  objective = objectives.build("teacher_guided", model, c)
  assert objective.evaluate_latents is not None
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (300, 64)).astype(np.uint8)
  t = rng.dirichlet(np.ones(K), 300).astype(np.float32)
  c.eval.batch_size = 128  # three batches, the last one padded
  step, calls = step_lib.make_eval_step(objective, None), []
  latents = step.latents
  step.latents = lambda *args: calls.append(1) or latents(*args)
  one_pass = step_lib.make_eval_step(objective._replace(evaluate_latents=None), None)
  for limit in (0, 300, 1000):
    c.eval.reconstruction_check_rows = limit
    (two_m, two_a), (one_m, one_a) = [
        splits.evaluate_split(s, params, x, t, c.eval, jax.random.PRNGKey(2))
        for s in (step, one_pass)]
    assert two_m == one_m and two_m["reconstruction_rows"] == 300
    for key in ("rec", "sq_err", "mu", "witness"):
      np.testing.assert_array_equal(two_a[key], one_a[key])
  assert not calls
  c.eval.reconstruction_check_rows = 100  # a subset: the decoder-free pass on every row
  sub_m, sub_a = splits.evaluate_split(step, params, x, t, c.eval, jax.random.PRNGKey(2))
  assert len(calls) == 3 and sub_m["reconstruction_rows"] == 100
  for key in ("margin", "kl", "active_units"):
    assert sub_m[key] == pytest.approx(one_m[key], rel=1e-6), key
  np.testing.assert_allclose(sub_a["mu"], one_a["mu"], rtol=1e-6, atol=1e-6)


def test_fetching_the_outputs_in_chunks_changes_no_number(monkeypatch):
  """A split larger than ``FETCH_ROWS`` is fetched from the device in chunks: the same
  metrics and arrays, to the bit, as one fetch at the end."""
  c, params, step, x, t = _split_and_eval_step(seed=4)
  c.eval.batch_size = 64  # five batches, the last one padded
  once_m, once_a = splits.evaluate_split(step, params, x, t, c.eval, jax.random.PRNGKey(2))
  fetched = []
  device_get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda tree: fetched.append(1) or device_get(tree))
  monkeypatch.setattr(splits, "FETCH_ROWS", 128)  # after every second batch
  chunk_m, chunk_a = splits.evaluate_split(step, params, x, t, c.eval, jax.random.PRNGKey(2))
  assert len(fetched) >= 3  # two chunks of two batches, then the last batch (and the probes)
  assert chunk_m == once_m
  assert sorted(chunk_a) == sorted(once_a)
  for key in once_a:
    np.testing.assert_array_equal(chunk_a[key], once_a[key])


def test_map_batches_feeds_one_batch_shape_and_drops_the_padding():
  """The teacher stage's ``map_batches``: every call sees ``batch_size`` rows (one compiled
  shape for every split), and the outputs are the rows' own, in order."""
  x = np.arange(7 * 3, dtype=np.uint8).reshape(7, 3)
  seen = []

  def fn(xb):
    seen.append(xb.shape)
    return xb.sum(axis=1) * 255.0  # to_unit scaled the rows to [0, 1]

  out = splits.map_batches(fn, x, batch_size=3)
  assert seen == [(3, 3)] * 3
  np.testing.assert_allclose(out, x.sum(axis=1).astype(np.float64), rtol=1e-5)
  assert splits.map_batches(fn, x, batch_size=10).shape == (7,) and seen[-1] == (10, 3)
