"""Certificate core (paper 1, section 2.3) against float64 NumPy references and Lemma 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from certvae_jax import certificate as cert

F32_TOL = dict(rtol=2e-5, atol=2e-5)  # float32 kernels against float64 references


# --- float64 NumPy references, written independently of the library ---------

def xlogy(x, y):
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(x > 0, x * np.log(np.where(x > 0, y, 1.0)), 0.0)


def ref_kl_rows(t, s):
  return (xlogy(t, t) - xlogy(t, s)).sum(-1)


def ref_teacher_mi(t):
  t = np.asarray(t, np.float64)
  tbar = t.mean(0)
  return ref_kl_rows(t, np.broadcast_to(tbar, t.shape)).mean()


def ref_alignment(t, s):
  return ref_kl_rows(np.asarray(t, np.float64), np.asarray(s, np.float64)).mean()


def random_simplex(rng, n, k, concentration):
  x = rng.dirichlet(np.full(k, concentration), size=n)
  return x / x.sum(1, keepdims=True)


def one_hot_rows(rng, n, k):
  return np.eye(k)[rng.integers(0, k, n)]


simplex_case = st.builds(
    lambda seed, n, k, conc, kind: (seed, n, k, conc, kind),
    # Shapes from a fixed set spanning N = 1..2000 and K = 2..200, so that jit
    # compiles each shape once instead of once per example.
    st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 7, 150, 2000]),
    st.sampled_from([2, 3, 10, 200]),
    st.sampled_from([0.05, 0.3, 1.0, 10.0, 100.0]), st.sampled_from(["dirichlet", "onehot"]))


def make_teacher(case):
  seed, n, k, conc, kind = case
  rng = np.random.default_rng(seed)
  return rng, (random_simplex(rng, n, k, conc) if kind == "dirichlet" else one_hot_rows(rng, n, k))


# --- Lemma 1 and Theorem 1 as properties -------------------------------------

@settings(max_examples=60, deadline=None)
@given(simplex_case)
def test_lemma1_constant_cost_is_mi_plus_kl(case):
  rng, t = make_teacher(case)
  k = t.shape[1]
  c = random_simplex(rng, 1, k, 1.0)[0] * 0.98 + 0.02 / k  # strictly positive constant
  with jax.enable_x64(True):
    lhs = float(cert.constant_student_cost(t, c))
    tbar = t.mean(0)
    rhs = float(cert.teacher_mi(t)) + float(ref_kl_rows(tbar[None], c[None])[0])
  np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(simplex_case)
def test_lemma1_tbar_is_the_best_constant_and_costs_exactly_i_t(case):
  rng, t = make_teacher(case)
  with jax.enable_x64(True):
    tbar = t.mean(0)
    best = float(cert.constant_student_cost(t, tbar))
    np.testing.assert_allclose(best, float(cert.teacher_mi(t)), rtol=1e-10, atol=1e-12)
    for _ in range(3):
      c = random_simplex(rng, 1, t.shape[1], 0.5)[0]
      assert float(cert.constant_student_cost(t, c)) >= best - 1e-12


@settings(max_examples=60, deadline=None)
@given(simplex_case, st.sampled_from([0.0, 0.05, 0.15]))
def test_every_constant_student_has_margin_at_most_minus_tau(case, tau):
  rng, t = make_teacher(case)
  with jax.enable_x64(True):
    for c in (t.mean(0), random_simplex(rng, 1, t.shape[1], 1.0)[0]):
      s = np.broadcast_to(c, t.shape)
      assert float(cert.margin(t, s, tau)) <= -tau + 1e-12
      assert not bool(cert.report(t, s, tau).certified)


@settings(max_examples=60, deadline=None)
@given(simplex_case)
def test_student_beating_i_t_is_not_constant(case):
  # Theorem 1: L_TS < I_T implies s is not constant. Students are mixtures of the
  # teacher and a constant; whenever one beats I_T, its rows must differ.
  rng, t = make_teacher(case)
  with jax.enable_x64(True):
    for w in (0.0, 0.5, 0.9, 1.0):
      s = w * t + (1 - w) * t.mean(0)
      s = s / s.sum(1, keepdims=True)
      if float(cert.alignment_loss(t, s)) < float(cert.teacher_mi(t)) - 1e-12:
        assert np.ptp(s, axis=0).max() > 0


# --- jitted functions against the float64 references ------------------------

@pytest.mark.parametrize("n,k,conc", [(1, 2, 1.0), (7, 2, 0.1), (500, 10, 0.3), (300, 200, 1.0)])
def test_functions_under_jit_match_numpy_float64(n, k, conc):
  rng = np.random.default_rng(n * 1000 + k)
  t = random_simplex(rng, n, k, conc).astype(np.float32)
  logits = rng.normal(size=(n, k)).astype(np.float32) * 3
  s = np.asarray(jax.nn.softmax(logits, -1), np.float64)
  s32 = s.astype(np.float32)
  c = t.mean(0)
  jitted = {
      "teacher_mi": jax.jit(cert.teacher_mi)(t),
      "student_mi": jax.jit(cert.student_mi)(s32),
      "alignment": jax.jit(cert.alignment_loss)(t, s32),
      "alignment_logits": jax.jit(cert.alignment_loss_from_logits)(t, logits),
      "constant": jax.jit(cert.constant_student_cost)(t, c),
      "margin": jax.jit(cert.margin, static_argnums=2)(t, s32, 0.05),
  }
  t64 = t.astype(np.float64)
  expected = {
      "teacher_mi": ref_teacher_mi(t64), "student_mi": ref_teacher_mi(s),
      "alignment": ref_alignment(t64, s), "alignment_logits": ref_alignment(t64, s),
      "constant": ref_alignment(t64, np.broadcast_to(t64.mean(0), t.shape)),
      "margin": ref_teacher_mi(t64) - 0.05 - ref_alignment(t64, s),
  }
  for name, value in jitted.items():
    np.testing.assert_allclose(float(value), expected[name], **F32_TOL, err_msg=name)


def test_report_under_jit_is_a_pytree_and_matches_eager():
  rng = np.random.default_rng(0)
  t = random_simplex(rng, 64, 5, 0.5).astype(np.float32)
  s = random_simplex(rng, 64, 5, 0.5).astype(np.float32)
  eager = cert.report(t, s)
  jitted = jax.jit(cert.report)(t, s)
  for f in ("teacher_mi", "alignment", "bare_margin", "margin", "student_mi"):
    np.testing.assert_allclose(float(getattr(jitted, f)), float(getattr(eager, f)), rtol=1e-6)
  assert bool(jitted.certified) == bool(eager.certified)


def test_float64_with_x64_is_exact():
  rng = np.random.default_rng(1)
  t = random_simplex(rng, 1000, 50, 0.2)
  s = random_simplex(rng, 1000, 50, 0.2)
  with jax.enable_x64(True):
    r = cert.report(t, s)
    assert jnp.asarray(r.teacher_mi).dtype == jnp.float64
    np.testing.assert_allclose(float(r.teacher_mi), ref_teacher_mi(t), rtol=1e-12)
    np.testing.assert_allclose(float(r.alignment), ref_alignment(t, s), rtol=1e-12)
    np.testing.assert_allclose(float(r.student_mi), ref_teacher_mi(s), rtol=1e-12)


def test_zero_conventions_zero_log_zero_and_infinite_alignment():
  t = np.array([[1.0, 0.0], [0.0, 1.0]])
  assert float(cert.teacher_mi(t)) == pytest.approx(np.log(2), rel=1e-6)
  assert float(cert.alignment_loss(t, t)) == 0.0  # 0 log 0 = 0, no NaN
  s = np.array([[0.0, 1.0], [0.0, 1.0]])  # zero mass where the teacher is positive
  value = float(cert.alignment_loss(t, s))
  assert value == np.inf and not np.isnan(value)
  assert float(cert.margin(t, s)) == -np.inf
  stats = cert.CertificateStats.zeros(2).update(t, s)
  assert float(stats.finalize().alignment) == np.inf


def test_edge_case_single_row_has_zero_teacher_mi_and_is_not_certifiable():
  t = np.array([[0.3, 0.7]])
  r = cert.report(t, t)
  assert float(r.teacher_mi) == pytest.approx(0.0, abs=1e-7)
  assert not r.certifiable and not bool(r.certified)
  assert "no positive certificate is possible" in r.summary_line()


def test_tau_sensitivity_and_summary_line():
  t = np.eye(4)[np.arange(40) % 4] * 0.9 + 0.025
  r = cert.report(t, t)
  m = r.margins()
  assert set(m) == {0.0, 0.05, 0.15}
  np.testing.assert_allclose(m[0.15], float(r.bare_margin) - 0.15, rtol=1e-6)
  assert r.summary_line().startswith("certified: G_tau=+")
  d = r.to_dict()
  assert d["certified"] is True and d["n"] == 40 and d["k"] == 4
  assert set(d["tau_sensitivity"]) == {"0", "0.05", "0.15"}


# --- streaming, merging ------------------------------------------------------

# Each random split size compiles the batch kernel once, so keep the example count modest.
@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([1, 5, 400]), st.sampled_from([2, 30]),
       st.integers(1, 5),
       st.booleans())
def test_streamed_and_merged_stats_equal_one_shot_report(seed, n, k, parts, logits):
  rng = np.random.default_rng(seed)
  t = random_simplex(rng, n, k, 0.3).astype(np.float32)
  z = (rng.normal(size=(n, k)) * 2).astype(np.float32)
  s = np.asarray(jax.nn.softmax(z, -1))
  cuts = (np.sort(rng.choice(np.arange(1, n), size=min(parts - 1, n - 1), replace=False))
          if n > 1 else [])
  pieces = np.split(np.arange(n), cuts)
  # Two halves accumulated separately (e.g. two hosts), then merged.
  halves = [cert.CertificateStats.zeros(k), cert.CertificateStats.zeros(k)]
  for j, idx in enumerate(pieces):
    student = z[idx] if logits else s[idx]
    halves[j % 2] = halves[j % 2].update(t[idx], student, from_logits=logits)
  streamed = halves[0].merge(halves[1]).finalize(0.05)
  one_shot = cert.report(t, s, 0.05)
  assert int(streamed.n) == n
  for f in ("teacher_mi", "alignment", "bare_margin", "margin", "student_mi"):
    np.testing.assert_allclose(float(getattr(streamed, f)), float(getattr(one_shot, f)),
                               rtol=1e-5, atol=3e-5, err_msg=f)
  ref = ref_teacher_mi(t.astype(np.float64))
  np.testing.assert_allclose(float(streamed.teacher_mi), ref, rtol=1e-5, atol=1e-5)


def test_batch_stats_inside_jit_and_finalize_under_jit():
  rng = np.random.default_rng(3)
  t = random_simplex(rng, 100, 6, 0.4).astype(np.float32)
  s = random_simplex(rng, 100, 6, 0.4).astype(np.float32)

  @jax.jit
  def f(t, s):
    a = cert.batch_stats(t[:50], s[:50])
    b = cert.batch_stats(t[50:], s[50:])
    return a.merge(b).finalize(0.05)

  r = f(t, s)
  np.testing.assert_allclose(float(r.alignment), ref_alignment(t, s), rtol=1e-5)
  np.testing.assert_allclose(float(r.teacher_mi), ref_teacher_mi(t), rtol=1e-5, atol=1e-6)


# --- bad input ---------------------------------------------------------------

GOOD = np.full((3, 4), 0.25)


@pytest.mark.parametrize("bad,match", [
    (np.full((4,), 0.25), "2-D"),
    (np.zeros((0, 4)), "at least one row"),
    (np.ones((3, 1)), "K >= 2"),
    (np.array([[0.5, np.nan], [0.5, 0.5]]), "row 0 has a non-finite"),
    (np.array([[0.5, 0.5], [0.5, np.inf]]), "row 1 has a non-finite"),
    (np.array([[0.5, 0.5], [1.5, -0.5]]), "row 1 has a negative"),
    (np.array([[0.5, 0.5], [0.5, 0.6], [0.45, 0.45]]), "worst is row 1"),
    (np.array([["a", "b"]]), "floating-point"),
])
def test_bad_teacher_raises_value_error_naming_argument_and_row(bad, match):
  with pytest.raises(ValueError, match="teacher: .*" + match):
    cert.teacher_mi(bad)


def test_bad_student_shapes_and_values():
  with pytest.raises(ValueError, match="same shape"):
    cert.alignment_loss(GOOD, np.full((3, 2), 0.5))
  with pytest.raises(ValueError, match="student: row 2 has a negative"):
    cert.margin(GOOD, np.array([[.25] * 4, [.25] * 4, [.5, .5, .5, -.5]]))
  with pytest.raises(ValueError, match="student_logits: row 1 has a non-finite"):
    cert.alignment_loss_from_logits(GOOD, np.array([[0.] * 4, [np.nan] * 4, [0.] * 4]))
  with pytest.raises(ValueError, match="c: expected shape"):
    cert.constant_student_cost(GOOD, np.array([0.5, 0.5]))
  with pytest.raises(ValueError, match="tau"):
    cert.margin(GOOD, GOOD, tau=-1.0)
  with pytest.raises(ValueError, match="tau"):
    cert.report(GOOD, GOOD, tau=float("nan"))


def test_renormalize_fixes_small_drift_only_when_asked():
  drift = GOOD * 1.01
  with pytest.raises(ValueError, match="renormalize=True"):
    cert.teacher_mi(drift)
  fixed = cert.validate_simplex("teacher", drift, renormalize=True)
  np.testing.assert_allclose(fixed.sum(1), 1.0)


def test_stats_bad_input():
  with pytest.raises(ValueError, match="k: expected an integer number of classes >= 2"):
    cert.CertificateStats.zeros(1)
  with pytest.raises(ValueError, match="expected K=5"):
    cert.CertificateStats.zeros(5).update(GOOD, GOOD)
  with pytest.raises(ValueError, match="n = 0"):
    cert.CertificateStats.zeros(4).finalize()
  with pytest.raises(ValueError, match="cannot merge"):
    cert.CertificateStats.zeros(4).merge(cert.CertificateStats.zeros(3))
