"""Population bounds on the margin: exact parts against float64 NumPy, coverage by simulation."""

import math

import jax
import numpy as np
import pytest

from certvae_jax import certificate
from certvae_jax.certificate import bounds

DELTA = 0.05


def population(m: int, k: int, seed: int, noise: float = 1.0):
  """A finite population: ``m`` teacher rows and a noisy witness that tracks them."""
  rng = np.random.default_rng(seed)
  t = rng.dirichlet(np.full(k, 0.3), size=m)
  logits = np.log(t + 1e-3) + noise * rng.standard_normal((m, k))
  s = np.exp(logits - logits.max(1, keepdims=True))
  return t, s / s.sum(1, keepdims=True)


def margin64(t: np.ndarray, s: np.ndarray, tau: float) -> float:
  """``G_tau`` in float64: ``H(Tbar) - mean CE`` (the identity the bounds rest on)."""
  tbar = t.mean(0)
  entropy = -np.sum(tbar[tbar > 0] * np.log(tbar[tbar > 0]))
  ce = -np.sum(np.where(t > 0, t * np.log(np.where(t > 0, s, 1.0)), 0.0), axis=1)
  return entropy - ce.mean() - tau


def floored(s: np.ndarray, eta: float) -> np.ndarray:
  return (1 - s.shape[1] * eta) * s + eta


def test_sample_equals_report_and_identity():
  t, s = population(400, 10, seed=0)
  b = bounds.margin_bounds(t, s, num_resamples=200)
  rep = certificate.report(t, s)
  assert b.sample == pytest.approx(rep.margin, abs=1e-5)
  assert b.sample == pytest.approx(margin64(t, s, 0.05), abs=1e-5)
  eta = 0.01 / 10
  assert b.student_floor == pytest.approx(eta)
  assert b.floored_sample == pytest.approx(margin64(t, floored(s, eta), 0.05), abs=1e-5)
  # Flooring raises L_TS by at most -log(1 - K eta) on any rows.
  assert b.floored_sample >= b.sample + math.log1p(-10 * eta) - 1e-6
  assert b.distribution_free < b.bootstrap < b.sample
  assert (b.n, b.delta, b.tau, b.num_resamples) == (400, DELTA, 0.05, 200)


def test_logits_match_probabilities_and_key_is_deterministic():
  t, s = population(300, 5, seed=1)
  a = bounds.margin_bounds(t, s, num_resamples=100)
  b = certificate.margin_bounds(t, np.log(s), from_logits=True, num_resamples=100)
  for x, y in zip(a, b):
    assert x == pytest.approx(y, abs=1e-5)
  c = bounds.margin_bounds(t, s, num_resamples=100, key=jax.random.PRNGKey(7))
  assert c.sample == a.sample and c.bootstrap != a.bootstrap


def test_mean_upper_bound_is_the_smaller_of_hoeffding_and_bernstein():
  x = np.random.default_rng(0).uniform(0, 2, size=200)
  r, d, n = 2.0, 0.1, 200
  hoeffding = x.mean() + r * math.sqrt(math.log(2 / d) / (2 * n))
  lt = math.log(4 / d)
  bernstein = x.mean() + math.sqrt(2 * x.var(ddof=1) * lt / n) + 7 * r * lt / (3 * (n - 1))
  assert bounds.mean_upper_bound(x, r, d) == pytest.approx(min(hoeffding, bernstein))
  const = np.full(200, 0.5)  # zero variance: Bernstein is the tighter one
  assert bounds.mean_upper_bound(const, r, d) == pytest.approx(0.5 + 7 * r * lt / (3 * 199))


def test_entropy_deviation_formula():
  n, k, d = 359, 10, 0.025
  h = -(1 / n) * math.log(1 / n) - (1 - 1 / n) * math.log(1 - 1 / n)
  c = math.log(k - 1) / n + h
  assert bounds.entropy_deviation(n, k, d) == pytest.approx(c * math.sqrt(n * math.log(1 / d) / 2))


@pytest.mark.parametrize("kwargs, match", [
    ({"delta": 0.0}, "delta"), ({"delta": 1.0}, "delta"), ({"num_resamples": 0}, "num_resamples"),
    ({"student_floor": 0.2}, "student_floor"), ({"student_floor": 0.0}, "student_floor"),
    ({"tau": -1.0}, "tau")])
def test_bad_arguments(kwargs, match):
  t, s = population(50, 5, seed=2)
  with pytest.raises(ValueError, match=match):
    bounds.margin_bounds(t, s, **kwargs)


def test_bad_rows_are_refused():
  t, s = population(50, 5, seed=3)
  bad = t.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="teacher"):
    bounds.margin_bounds(bad, s)
  with pytest.raises(ValueError, match="student"):
    bounds.margin_bounds(t, s[:, :4])


def test_one_row_or_a_bad_key_is_refused_with_a_reason():
  t, s = population(1, 3, seed=4)
  with pytest.raises(ValueError, match="teacher: population bounds need at least two rows"):
    bounds.margin_bounds(t, s, num_resamples=10)
  t, s = population(20, 3, seed=4)
  for key in (3, "a", np.zeros(3)):
    with pytest.raises(ValueError, match="key: expected a JAX PRNG key"):
      bounds.margin_bounds(t, s, num_resamples=10, key=key)
  for key in (jax.random.PRNGKey(1), jax.random.key(1)):
    assert np.isfinite(bounds.margin_bounds(t, s, num_resamples=10, key=key).bootstrap)


# Coverage: each bound must lie below the population margin in at least 1 - delta of the
# trials. With TRIALS independent trials, the count of misses of a bound with exactly
# delta miss probability is Binomial(TRIALS, delta); MC_TOLERANCE allows its 3-sigma
# excess over delta * TRIALS.
TRIALS = 60
MC_TOLERANCE = 3 * math.sqrt(TRIALS * DELTA * (1 - DELTA))


@pytest.mark.parametrize("n", [50, 500, 5000])
@pytest.mark.parametrize("k", [2, 10, 100])
def test_coverage_by_simulation(n, k):
  t_pop, s_pop = population(20_000, k, seed=k)
  truth = margin64(t_pop, s_pop, 0.05)
  eta = 0.01 / k
  truth_floored = margin64(t_pop, floored(s_pop, eta), 0.05)
  rng = np.random.default_rng(1000 * k + n)
  boot_misses = 0
  for trial in range(TRIALS):
    idx = rng.integers(0, len(t_pop), n)
    b = bounds.margin_bounds(t_pop[idx], s_pop[idx], delta=DELTA, num_resamples=400,
                             key=jax.random.PRNGKey(trial))
    boot_misses += b.bootstrap > truth
    assert b.distribution_free <= truth_floored, (trial, b, truth_floored)
  assert boot_misses <= DELTA * TRIALS + MC_TOLERANCE, (boot_misses, truth)


def test_report_with_delta_carries_the_bounds_and_the_population_verdict():
  t, s = population(2000, 10, seed=5, noise=0.3)
  rep = certificate.report(t, s, delta=0.05)
  assert rep.bounds == bounds.margin_bounds(t, s)
  assert rep.certified and rep.bounds.distribution_free > 0
  line = rep.summary_line()
  assert line.startswith("certified on the evaluation set: G_tau=")
  assert "certified for the population at confidence 0.95" in line
  assert rep.to_dict()["bounds"]["bootstrap"] == rep.bounds.bootstrap
  assert "bounds" not in certificate.report(t, s).to_dict()
  assert certificate.report(t, s).summary_line().startswith("certified: G_tau=")


def test_population_verdict_follows_the_positive_bound():
  t, s = population(60, 10, seed=6, noise=0.3)  # few rows: the bounds are wide
  rep = certificate.report(t, s, delta=0.05)
  b = rep.bounds
  assert rep.certified and b.distribution_free < 0 < b.bootstrap
  assert "certified for the population at approximate confidence 0.95" in rep.summary_line()
  rep = rep._replace(bounds=b._replace(bootstrap=-0.1))
  assert "not certified for the population at confidence 0.95" in rep.summary_line()


def test_report_refuses_delta_inside_jit():
  t, s = population(20, 3, seed=7)
  with pytest.raises(ValueError, match="delta"):
    jax.jit(lambda a, b: certificate.report(a, b, delta=0.05).margin)(t, s)
