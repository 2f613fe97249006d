"""Teacher search, QC, freezing and the artifact (paper 1, section 2.2)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from certvae_jax import certificate, teacher
from certvae_jax.teachers import artifact
from configs import digits


def blobs(n=300, d=4, k=3, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 4
  return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float64)


@pytest.mark.parametrize("cov", teacher.COVARIANCE_TYPES)
def test_jax_gmm_probs_equal_sklearn_predict_proba(cov):
  f = blobs()
  gm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(f)
  frozen = teacher.freeze_sklearn_gmm(gm)
  ours = np.asarray(jax.jit(teacher.gmm_probs)(frozen, jnp.asarray(f, jnp.float32)))
  np.testing.assert_allclose(ours, gm.predict_proba(f.astype(np.float32)), atol=1e-5)
  # and on new inputs (the teacher is a function of any x)
  g = blobs(seed=1)
  ours = np.asarray(teacher.gmm_probs(frozen, jnp.asarray(g, jnp.float32)))
  np.testing.assert_allclose(ours, gm.predict_proba(g.astype(np.float32)), atol=1e-5)


def test_qc_scores_on_hand_computed_case():
  p = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
  s = teacher.score_teacher(p, high_margin=0.4)  # gaps 0.8, 0.5, 0.3, 0.0
  assert s["mean_margin"] == pytest.approx((0.8 + 0.5 + 0.3 + 0.0) / 4)
  assert s["high_margin_fraction"] == pytest.approx(0.5)
  hist = np.array([3, 1, 0]) / 4  # argmax: 0, 1, 0, 0 (ties go to the first)
  assert s["hard_balance_kl"] == pytest.approx(np.sum(hist[:2] * np.log(hist[:2] * 3)))
  tbar = p.mean(0)
  assert s["soft_usage_kl"] == pytest.approx(np.sum(tbar * np.log(tbar * 3)))
  assert s["min_mass"] == pytest.approx(0.05)
  assert s["teacher_mi"] == pytest.approx(float(certificate.teacher_mi(p)), rel=1e-6)


def grid(**kw):
  c = digits.get_config().teacher
  c.components, c.covariance_types, c.seeds = (3,), ("full", "diag"), (0, 1)
  for k, v in kw.items():
    c[k] = v
  return c


def test_search_selects_best_feasible_by_teacher_mi():
  res = teacher.search_teacher(blobs(), grid())
  assert not res.stress_case and len(res.candidates) == 4
  feasible = [c for c in res.candidates if c["feasible"]]
  best = max(c["scores"]["teacher_mi"] for c in feasible)
  assert res.candidates[res.selected]["scores"]["teacher_mi"] == best


def test_search_flags_stress_case_instead_of_crashing():
  res = teacher.search_teacher(blobs(), grid(min_mass=0.9))  # impossible threshold
  assert res.stress_case
  assert all(not c["feasible"] and c["reason"].startswith("min_mass") for c in res.candidates)
  assert res.gmm.num_components == 3


def test_search_rejects_bad_grids_before_fitting():
  with pytest.raises(ValueError, match="exceeds the number of training points"):
    teacher.search_teacher(blobs(n=5), grid(components=(10,)))
  with pytest.raises(ValueError, match="distinct feature points"):
    teacher.search_teacher(np.zeros((50, 2)), grid())
  with pytest.raises(ValueError, match="NaN or inf"):
    teacher.search_teacher(np.full((50, 2), np.nan), grid())
  with pytest.raises(ValueError, match="unknown 'banana'"):
    teacher.search_teacher(blobs(), grid(covariance_types=("banana",)))


def test_artifact_roundtrip_and_damage_detection(tmp_path):
  res = teacher.search_teacher(blobs(), grid())
  enc = {"Dense_0": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}}
  t = teacher.FrozenTeacher(encoder_params=enc, gmm=res.gmm)
  tid = artifact.save_teacher(str(tmp_path), t, {"stress_case": False},
                             train_targets=np.full((3, 3), 1 / 3))
  loaded, info = artifact.load_teacher(str(tmp_path))
  assert info["teacher_id"] == tid == artifact.teacher_id(loaded)
  np.testing.assert_array_equal(loaded.gmm.means, res.gmm.means)
  assert artifact.load_train_targets(str(tmp_path)).shape == (3, 3)
  # Corrupt the recorded id: the loader must refuse, not silently use it.
  info["teacher_id"] = "0" * 16
  (tmp_path / "teacher.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match="damaged"):
    artifact.load_teacher(str(tmp_path))


def test_label_smoothed_teacher_reproduces_paper2_mnist_i_t():
  counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # MNIST train
  y = np.repeat(np.arange(10), counts)
  t = teacher.label_smoothed(y, 10, 0.05)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  with jax.enable_x64(True):
    assert float(certificate.teacher_mi(t.astype(np.float64))) == pytest.approx(2.0189, abs=5e-5)
  with pytest.raises(ValueError, match="labels: expected values"):
    teacher.label_smoothed(np.array([0, 10]), 10, 0.05)
  with pytest.raises(ValueError, match="eps"):
    teacher.label_smoothed(np.array([0, 1]), 10, 1.5)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_pca_gmm_teacher_equals_sklearn_pca_then_predict_proba(cov):
  f = blobs(n=400, d=8, k=3)
  res = teacher.fit_teacher(f, num_components=3, covariance_types=cov, seeds=0,
                            feature_space="pca:3")
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  pca = PCA(n_components=3, svd_solver="full").fit(f)
  gm = GaussianMixture(3, covariance_type=cov, random_state=0, max_iter=200,
                       reg_covar=1e-6).fit(pca.transform(f))
  g = blobs(n=100, d=8, k=3, seed=1)  # new inputs: the teacher is a function of any x
  for x in (f, g):
    np.testing.assert_allclose(np.asarray(jax.jit(res.probs)(jnp.asarray(x, jnp.float32))),
                               gm.predict_proba(pca.transform(x)), atol=1e-5)
  # frozen(): the same teacher on the encoder's outputs
  teacher_fn = teacher.frozen(lambda x: (x, None), res)
  np.testing.assert_allclose(np.asarray(teacher_fn(jnp.asarray(g, jnp.float32))),
                             gm.predict_proba(pca.transform(g)), atol=1e-5)


def test_pca_teacher_survives_the_artifact(tmp_path):
  res = teacher.fit_teacher(blobs(n=300, d=6), num_components=3, covariance_types="diag",
                            seeds=0, feature_space="pca:2")
  enc = {"Dense_0": {"kernel": jnp.ones((4, 4))}}
  t = teacher.FrozenTeacher(encoder_params=enc, gmm=res.gmm, projection=res.projection)
  no_pca = teacher.FrozenTeacher(encoder_params=enc, gmm=res.gmm)
  tid = artifact.save_teacher(str(tmp_path), t, {"stress_case": False})
  assert tid != artifact.teacher_id(no_pca)  # the projection is part of the teacher's identity
  loaded, _ = artifact.load_teacher(str(tmp_path))
  np.testing.assert_array_equal(loaded.projection.components, res.projection.components)
  np.testing.assert_array_equal(loaded.projection.mean, res.projection.mean)


@pytest.mark.parametrize("value, match", [("pca:0", "integer N >= 1"), ("pca", "'mu' or"),
                                          ("banana", "'mu' or"), ("pca:9", "N <= min")])
def test_bad_feature_space_is_refused(value, match):
  with pytest.raises(ValueError, match=match):
    teacher.fit_teacher(blobs(n=100, d=4), num_components=3, feature_space=value)


@pytest.mark.parametrize("field, value", [("teacher.features", "pca:-1"),
                                          ("teacher.features", "umap:2"), ("eval.delta", 1.0),
                                          ("eval.delta", 0.0), ("eval.bootstrap_resamples", 0),
                                          ("eval.reconstruction_check", "yes")])
def test_config_refuses_bad_new_fields_naming_them(field, value):
  from certvae_jax.configs import schema as config_lib  # pylint: disable=import-outside-toplevel
  c = digits.get_config()
  section, leaf = field.split(".")
  with c.ignore_type():
    c[section][leaf] = value
  with pytest.raises(ValueError, match=f"config.{field}"):
    config_lib.validate(c)


def test_a_teacher_of_the_inputs_is_fitted_before_training_and_equals_sklearn(tmp_path):
  """``features='input_pca:N'`` (paper 2, v4): PCA of the training pixels, then the GMM
  search; no warm-up runs for it, and ``T(x)`` is sklearn's PCA + predict_proba on x."""
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel

  from certvae_jax import configs, data, train  # pylint: disable=import-outside-toplevel
  cfg = configs.get_config("digits_simplex:pca_smoke")
  cfg.teacher.components, cfg.teacher.covariance_types = (10,), ("diag",)
  runner = train.Runner(cfg, str(tmp_path))
  fitted = runner.ensure_teacher()
  assert not (tmp_path / "warmup").exists()
  assert fitted.info["warmup_step"] is None and fitted.num_classes == 10
  d = data.load_dataset("digits")
  x, x_test = (data.to_unit(a).astype(np.float64) for a in (d.x_train, d.x_test))
  pca = PCA(n_components=8, svd_solver="full").fit(x)
  gm = GaussianMixture(10, covariance_type="diag", random_state=0, max_iter=200,
                       reg_covar=1e-6).fit(pca.transform(x))
  probs = runner.engine.teacher_probs(10)
  for split in (x, x_test):
    np.testing.assert_allclose(np.asarray(probs(fitted.function,
                                                jnp.asarray(split, jnp.float32))),
                               gm.predict_proba(pca.transform(split)), atol=1e-5)
  with pytest.raises(ValueError, match="config.teacher.features: expected 'mu', 'pca:N' or "
                                       "'input_pca:N'"):
    cfg.teacher.features = "input_pca:x"
    train.Runner(cfg, str(tmp_path / "bad"))
  cfg.teacher.features = "input_pca:65"  # digits have 64 pixels
  with pytest.raises(ValueError, match="pca:65 needs N <= min"):
    train.Runner(cfg, str(tmp_path / "big")).ensure_teacher()
