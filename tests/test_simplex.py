"""Paper 2's simplex witness, analytic code and escape force (paper 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certvae_jax import simplex, teacher


@pytest.mark.parametrize("k", [2, 3, 10, 57])
def test_simplex_vertices_identities(k):
  w = simplex.simplex_vertices(k)
  assert w.shape == (k, k - 1)
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-12)
  centring = np.eye(k) - np.ones((k, k)) / k
  np.testing.assert_allclose(w @ w.T, k / (k - 1) * centring, atol=1e-12)
  np.testing.assert_allclose(w.T @ w, k / (k - 1) * np.eye(k - 1), atol=1e-12)
  np.testing.assert_allclose(w.sum(0), 0.0, atol=1e-12)  # centred


@pytest.mark.parametrize("k,beta", [(2, 1.0), (10, 5.0), (30, 0.7)])
def test_analytic_code_reproduces_teacher_and_energy_closed_form(k, beta):
  rng = np.random.default_rng(k)
  t = rng.dirichlet(np.full(k, 0.5), size=200) * 0.99 + 0.01 / k
  mu = np.asarray(simplex.analytic_code(t.astype(np.float32), beta))
  s = np.asarray(jax.nn.softmax(simplex.witness_logits(jnp.asarray(mu), k, beta), axis=-1))
  np.testing.assert_allclose(s, t, atol=1e-5)
  energy = float(np.mean(0.5 * np.sum(mu.astype(np.float64) ** 2, axis=1)))
  np.testing.assert_allclose(energy, simplex.analytic_code_energy(t, beta), rtol=1e-4)


def test_analytic_code_energy_matches_paper2_value():
  t = teacher.label_smoothed(np.arange(10), 10, 0.05)  # energy is the same for every row
  assert simplex.analytic_code_energy(t, 5.0) == pytest.approx(0.4469, abs=5e-5)  # paper: 0.4468


@pytest.mark.parametrize("k,beta,lam", [(3, 2.0, 1.0), (10, 5.0, 3.0)])
def test_escape_force_equals_autodiff_at_a_collapsed_code(k, beta, lam):
  rng = np.random.default_rng(0)
  t_np, mu0_np = rng.dirichlet(np.ones(k), size=64), rng.normal(size=k - 1)
  with jax.enable_x64(True):
    # float64 throughout: the closed form assumes rows summing to 1 exactly.
    t, mu0 = jnp.asarray(t_np), jnp.asarray(mu0_np)
    codes = jnp.broadcast_to(mu0, (64, k - 1))
    # Per-input gradient of lambda * KL(T(x) || s(mu(x))): the batch mean times N.
    grads = jax.grad(lambda m: lam * 64 * simplex.alignment_at_codes(t, m, beta))(codes)
    s0 = jax.nn.softmax(simplex.witness_logits(mu0, k, beta))
    w = simplex.simplex_vertices(k)
    np.testing.assert_allclose(grads, lam * beta * (s0 - t) @ w, atol=1e-10)
    ef = simplex.escape_force(np.asarray(t), beta, lam)
    # F is the input-dependent part of the gradient itself (descent moves codes along -F).
    np.testing.assert_allclose(ef.force, grads - grads.mean(0), atol=1e-10)
    assert ef.mean_sq_norm == pytest.approx(ef.closed_form, rel=1e-10)
  const = np.tile(np.asarray(t)[:1], (10, 1))
  assert simplex.escape_force(const, beta, lam).closed_form == pytest.approx(0.0, abs=1e-12)


def test_fixed_witness_has_no_parameters_and_checks_latent_dim():
  head = simplex.SimplexWitness(num_classes=10, beta=5.0)
  variables = head.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)))
  assert jax.tree.leaves(variables) == []
  with pytest.raises(ValueError, match="latent dimension >= K-1 = 9"):
    head.init(jax.random.PRNGKey(0), jnp.zeros((2, 4)))


def test_bad_inputs():
  with pytest.raises(ValueError, match="zero probability"):
    simplex.analytic_code(np.array([[1.0, 0.0], [0.5, 0.5]]), 1.0)
  with pytest.raises(ValueError, match="beta"):
    simplex.analytic_code_energy(np.full((2, 2), 0.5), 0.0)
  with pytest.raises(ValueError, match="lambda_ts"):
    simplex.escape_force(np.full((2, 2), 0.5), 1.0, -1.0)
  with pytest.raises(ValueError, match="K >= 2"):
    simplex.simplex_vertices(1)


def test_prefit_refuses_a_teacher_with_zero_entries_before_training():
  """The analytic code takes log T: the prefit mode checks the teacher's rows first."""
  from certvae_jax import registrations  # noqa: F401  pylint: disable=import-outside-toplevel
  from certvae_jax.training import modes  # pylint: disable=import-outside-toplevel
  prefit = modes.get("prefit")
  prefit.check_targets(np.array([[0.9, 0.1], [0.2, 0.8]]))
  with pytest.raises(ValueError, match="rst_prefit needs a teacher without zero entries"):
    prefit.check_targets(np.array([[1.0, 0.0], [0.2, 0.8]]))


def _kl_rows(t, s):
  return float(np.mean(np.sum(t * (np.log(t) - np.log(s)), axis=1)))


@pytest.mark.parametrize("k,beta", [(3, 1.0), (10, 5.0)])
def test_margin_energy_path_runs_from_the_constant_to_the_exact_code(k, beta):
  """Both ends and the middle against NumPy float64: at alpha the witness is the tempered
  teacher T^alpha / sum T^alpha; the energy is alpha^2 E*."""
  rng = np.random.default_rng(k)
  t = rng.dirichlet(np.ones(k), 200) * 0.9 + 0.1 / k  # no zero entries
  alphas = (0.0, 0.37, 1.0)
  path = simplex.margin_energy_path(t, beta, alphas, tau=0.05)
  tbar = t.mean(0)
  i_t = _kl_rows(t, np.broadcast_to(tbar, t.shape))
  assert path.teacher_mi == pytest.approx(i_t, abs=1e-6)
  for j, alpha in enumerate(alphas):
    tempered = t**alpha / np.sum(t**alpha, axis=1, keepdims=True)
    assert path.alignment[j] == pytest.approx(_kl_rows(t, tempered), abs=2e-5)
    assert path.margin[j] == pytest.approx(i_t - 0.05 - _kl_rows(t, tempered), abs=2e-5)
    assert path.energy[j] == pytest.approx(
        alpha**2 * simplex.analytic_code_energy(t, beta), rel=1e-4, abs=1e-9)
    assert simplex.tempered_alignment(t, alpha) == pytest.approx(_kl_rows(t, tempered),
                                                                 abs=1e-10)
  assert path.alignment[0] == pytest.approx(_kl_rows(t, np.full_like(t, 1.0 / k)), abs=1e-5)
  assert abs(path.alignment[-1]) < 1e-5  # the exact code: zero alignment error
  # The least certifiable scale: the closed-form margin crosses zero there.
  a = path.alpha_certified
  assert 0 < a < 1 and simplex.least_certifiable_alpha(t, 0.05) == a
  assert i_t - 0.05 - simplex.tempered_alignment(t, a) == pytest.approx(0.0, abs=1e-7)
  assert i_t - 0.05 - simplex.tempered_alignment(t, a - 1e-3) < 0
  assert path.energy_certified == pytest.approx(
      a**2 * simplex.analytic_code_energy(t, beta), rel=1e-5)
  fine = simplex.margin_energy_path(t, beta)
  assert np.all(np.diff(fine.margin) > -1e-6)  # the margin rises along the path


def test_margin_energy_path_refuses_bad_scales_and_reports_an_uncertifiable_teacher():
  t = np.full((10, 4), 0.25)
  path = simplex.margin_energy_path(t, 2.0, (0.0, 1.0))
  assert path.alpha_certified is None and path.energy_certified is None  # I_T = 0 <= tau
  for alphas in ((1.5,), (-0.1,), (np.nan,), (), "a"):
    with pytest.raises(ValueError, match="alphas: expected"):
      simplex.margin_energy_path(t, 2.0, alphas)


def test_the_balance_scale_shortens_the_code_as_the_kl_weight_grows():
  t = np.full((50, 10), 0.05 / 10) + 0.95 * np.eye(10)[np.arange(50) % 10]
  e_star = simplex.analytic_code_energy(t, 5.0)
  alphas = [simplex.balance_alpha(t, 5.0, 1.0, kl) for kl in (0.0, 1.0, 4.0, 64.0)]
  assert alphas[0] == 1.0 and all(a > b for a, b in zip(alphas, alphas[1:]))
  for kl, a in zip((1.0, 4.0), alphas[1:3]):  # a grid minimum of the stated trade-off
    cost = lambda x: simplex.tempered_alignment(t, x) + kl * x * x * e_star  # noqa: E731
    assert cost(a) <= min(cost(a - 1e-3), cost(min(a + 1e-3, 1.0))) + 1e-12
