"""The library API for a user's own model: fit_teacher, frozen, from_logits, certify, checks."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from scipy.special import softmax
from sklearn.mixture import GaussianMixture

from certvae_jax import certificate, teacher
from certvae_jax.configs import digits

RNG = np.random.default_rng(0)


def _blobs(n=300, d=3, k=3):
  centres = RNG.normal(size=(k, d)) * 5
  return np.concatenate([c + RNG.normal(size=(n // k, d)) for c in centres]).astype(np.float32)


def _rows(n, k):
  return softmax(RNG.normal(size=(n, k)) * 2, axis=1)


def _ref(t, s, tau=0.05):
  """float64 NumPy: I_T, L_TS, G_tau."""
  tbar = t.mean(0)
  i_t = np.mean(np.sum(t * np.log(t / tbar), 1))
  l_ts = np.mean(np.sum(t * np.log(t / s), 1))
  return i_t, l_ts, i_t - tau - l_ts


def test_fit_teacher_defaults_are_the_config_defaults():
  defaults = digits.get_config().teacher
  for param, field in teacher.CONFIG_FIELDS.items():
    assert teacher.FIT_DEFAULTS[param] == defaults[field], param


def test_fit_teacher_selects_and_its_probs_equal_predict_proba():
  f = _blobs()
  fitted = teacher.fit_teacher(f, num_components=3, covariance_types="full", seeds=(0, 1))
  assert len(fitted.candidates) == 2 and not fitted.stress_case
  assert fitted.scores["teacher_mi"] == max(c["scores"]["teacher_mi"] for c in fitted.candidates)
  sel = fitted.candidates[fitted.selected]
  gm = GaussianMixture(3, covariance_type="full", random_state=sel["seed"], max_iter=200,
                       reg_covar=1e-6).fit(f.astype(np.float64))
  np.testing.assert_allclose(jax.jit(fitted.probs)(f), gm.predict_proba(f), atol=1e-5)


def test_fit_teacher_refuses_bad_keywords_and_values_by_name():
  f = _blobs()
  with pytest.raises(ValueError, match=r"fit_teacher: unknown keyword\(s\) \['n_components'\]"):
    teacher.fit_teacher(f, n_components=3)
  with pytest.raises(ValueError, match="num_components: each entry must be an integer K >= 2"):
    teacher.fit_teacher(f, num_components=1)
  with pytest.raises(ValueError, match="covariance_types: unknown 'banana'"):
    teacher.fit_teacher(f, covariance_types=("banana",))
  with pytest.raises(ValueError, match="min_mass: expected a finite number >= 0"):
    teacher.fit_teacher(f, min_mass=-1.0)
  with pytest.raises(ValueError, match="features: expected shape"):
    teacher.fit_teacher(np.zeros(5))


def test_search_teacher_takes_a_partial_config_with_defaults_for_the_rest():
  partial = types.SimpleNamespace(components=(3,), covariance_types=("diag",), seeds=(0,))
  fitted = teacher.search_teacher(_blobs(), partial)
  assert len(fitted.candidates) == 1 and fitted.gmm.num_components == 3


def test_frozen_teacher_is_a_pure_function_of_any_input():
  f = _blobs()
  fitted = teacher.fit_teacher(f, num_components=3, covariance_types="diag", seeds=0)
  w = RNG.normal(size=(3, 5)).astype(np.float32)
  x = f @ w  # "inputs" from which a plain-JAX encoder recovers the features
  encoder = lambda xs: (xs @ jnp.linalg.pinv(w), None)  # noqa: E731  a tuple, like (mu, logvar)
  teacher_fn = jax.jit(teacher.frozen(encoder, fitted))
  np.testing.assert_allclose(teacher_fn(x), fitted.probs(f), atol=1e-4)


def test_margin_and_report_from_logits_equal_the_probability_path():
  t, logits = _rows(50, 4), RNG.normal(size=(50, 4)) * 3
  s = softmax(logits, axis=1)
  i_t, l_ts, g = _ref(t, s)
  assert float(certificate.margin(t, logits, from_logits=True)) == pytest.approx(g, abs=1e-5)
  r = certificate.report(t, logits, from_logits=True)
  assert r.margin == pytest.approx(g, abs=1e-5) and r.alignment == pytest.approx(l_ts, abs=1e-5)
  assert r.student_mi == pytest.approx(certificate.report(t, s).student_mi, abs=1e-5)


def test_logits_passed_as_probabilities_get_a_hint():
  t, logits = _rows(5, 3), RNG.normal(size=(5, 3))
  with pytest.raises(ValueError, match="did you pass logits"):
    certificate.margin(t, logits)
  with pytest.raises(ValueError, match="did you pass logits"):
    certificate.report(t, np.abs(logits) * 3)  # non-negative, but entries above 1


def test_return_types_are_as_documented():
  t, s = _rows(20, 3), _rows(20, 3)
  m = certificate.margin(t, s)
  assert isinstance(m, jax.Array) and m.shape == ()
  r = certificate.report(t, s)
  assert isinstance(r.margin, float) and isinstance(r.n, int) and isinstance(r.certified, bool)
  fin = certificate.CertificateStats.zeros(3).update(t, s).finalize()
  assert isinstance(fin.margin, float) and isinstance(fin.certified, bool)
  traced = jax.jit(certificate.report)(t, s)
  assert isinstance(traced.margin, jax.Array)


def test_certify_streams_a_dataset_through_witness_and_teacher_functions():
  x = RNG.normal(size=(130, 6)).astype(np.float32)
  w_t, w_s = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
  teacher_fn = lambda xb: jax.nn.softmax(xb @ w_t)  # noqa: E731
  witness_fn = lambda xb: xb @ w_s  # noqa: E731  logits
  batches = [x[i:i + 32] for i in range(0, 130, 32)]
  rep = certificate.certify(witness_fn, teacher_fn, batches, from_logits=True)
  full = certificate.report(np.asarray(teacher_fn(x)), np.asarray(witness_fn(x)),
                            from_logits=True)
  for key in ("teacher_mi", "alignment", "margin", "student_mi"):
    assert getattr(rep, key) == pytest.approx(getattr(full, key), abs=1e-5)
  assert rep.n == 130 and isinstance(rep.margin, float)
  # Sharded device arrays go through the same path.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  sharded = [jax.device_put(b, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
             for b in batches]
  assert certificate.certify(witness_fn, teacher_fn, sharded, from_logits=True
                             ).margin == pytest.approx(rep.margin, abs=1e-6)
  with pytest.raises(ValueError, match="batches: no batch"):
    certificate.certify(witness_fn, teacher_fn, [], from_logits=True)
  with pytest.raises(ValueError, match="batches: batch 0: teacher"):
    certificate.certify(witness_fn, lambda xb: xb @ w_t, batches, from_logits=True)


def test_every_function_takes_probability_rows_by_default_and_refuses_the_wrong_kind():
  """One default (probability rows) for margin, report, certify, the stats and the bounds;
  logits passed as rows and rows passed as logits are both refused with a hint."""
  t = _rows(50, 4)
  logits = RNG.normal(size=(50, 4))
  rows = np.asarray(jax.nn.softmax(logits))
  reference = float(certificate.margin(t, rows))
  stats = certificate.CertificateStats.zeros(4).update(t, rows).finalize()
  bounds = certificate.margin_bounds(t, rows, num_resamples=50)
  certified = certificate.certify(lambda i: rows[i], lambda i: t[i], [np.arange(50)])
  for value in (float(certificate.report(t, rows).margin), stats.margin, certified.margin,
                bounds.sample):
    assert value == pytest.approx(reference, abs=1e-5)
  for call in (lambda: certificate.margin(t, logits), lambda: certificate.report(t, logits),
               lambda: certificate.certify(lambda i: logits[i], lambda i: t[i],
                                           [np.arange(50)])):
    with pytest.raises(ValueError, match="did you pass logits"):
      call()
  for call in (lambda: certificate.margin(t, rows, from_logits=True),
               lambda: certificate.report(t, rows, from_logits=True),
               lambda: certificate.margin_bounds(t, rows, from_logits=True),
               lambda: certificate.certify(lambda i: rows[i], lambda i: t[i],
                                           [np.arange(50)], from_logits=True)):
    with pytest.raises(ValueError, match="did you pass probabilities"):
      call()


def test_checked_report_under_jit_turns_invalid_rows_into_nan():
  t, s = _rows(10, 3), _rows(10, 3)
  good = jax.jit(lambda a, b: certificate.report(a, b, checked=True))(t, s)
  assert float(good.margin) == pytest.approx(certificate.report(t, s).margin, abs=1e-6)
  bad = jax.jit(lambda a, b: certificate.report(a, b, checked=True))(3 * t, s)  # rows sum to 3
  assert np.isnan(float(bad.margin)) and not bool(bad.certified)
  unchecked = jax.jit(certificate.report)(3 * t, s)
  assert np.isfinite(float(unchecked.margin))  # why the checked mode exists


def test_valid_inputs_with_checkify():
  t, s = _rows(10, 3), _rows(10, 3)

  def margin(a, b):
    checkify.check(certificate.valid_inputs(a, b), "certificate: invalid rows")
    return certificate.margin(a, b)

  checked = jax.jit(checkify.checkify(margin))
  err, value = checked(t, s)
  err.throw()
  assert float(value) == pytest.approx(float(certificate.margin(t, s)), abs=1e-6)
  err, _ = checked(t * 3, s)
  with pytest.raises(checkify.JaxRuntimeError, match="invalid rows"):
    err.throw()
