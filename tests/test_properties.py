"""Property transfer (paper 1, Corollary 2): the certificate of a coarser teacher property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from certvae_jax import certificate


def _kl_rows(t, s):
  t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):  # 0 log 0 = 0, taken by the where
    return float(np.mean(np.sum(np.where(t > 0, t * (np.log(t) - np.log(s)), 0.0), axis=1)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(3, 9), n=st.integers(2, 40))
def test_lemma_1_holds_at_every_level_and_a_constant_witness_stays_uncertified(seed, k, n):
  rng = np.random.default_rng(seed)
  t = rng.dirichlet(np.ones(k) * 0.5, n)
  means = rng.normal(size=(k, 3))
  constant = np.broadcast_to(rng.dirichlet(np.ones(k)), (n, k))
  for g, groups in certificate.hierarchy(means).items():
    tc, cc = certificate.coarsen(t, groups), certificate.coarsen(constant, groups)
    assert tc.shape == (n, g) and np.allclose(tc.sum(1), 1.0)
    tbar = tc.mean(0)
    i_t = _kl_rows(tc, np.broadcast_to(tbar, tc.shape))
    # Lemma 1 on the coarse rows: mean KL(T_c || c) = I_T + KL(Tbar_c || c), float64.
    assert _kl_rows(tc, cc) == pytest.approx(i_t + _kl_rows(tbar[None], cc[:1]), abs=1e-9)
    assert float(certificate.teacher_mi(tc)) == pytest.approx(i_t, abs=1e-5)
    assert certificate.report(tc, cc).margin <= -certificate.DEFAULT_TAU + 1e-6


def test_coarsen_takes_ids_or_lists_works_under_jit_and_refuses_a_non_partition():
  t = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
  by_ids = certificate.coarsen(t, [0, 1, 1, 0])
  by_lists = certificate.coarsen(t, [[0, 3], [1, 2]])
  np.testing.assert_allclose(by_ids, [[0.5, 0.5], [0.5, 0.5]])
  np.testing.assert_allclose(by_lists, by_ids)
  traced = jax.jit(lambda p: certificate.coarsen(p, [0, 1, 1, 0]))(jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(np.asarray(traced), by_ids, atol=1e-7)
  for groups in ([0, 1, 1], [0, 2, 2, 0], [-1, 0, 0, 0], [[0, 1], [1, 2, 3]], [[0, 1], [2]],
                 [[0, 1, 2, 3], []], "ab"):
    with pytest.raises(ValueError, match="groups"):
      certificate.coarsen(t, groups)


def test_the_hierarchy_is_nested_and_merges_nearest_means():
  means = np.array([[0.0, 0], [0.05, 0], [5, 5], [5.2, 5], [10, 0]])
  levels = certificate.hierarchy(means)
  assert sorted(levels) == [2, 3, 4]
  assert levels[4][0] == levels[4][1]  # the closest pair merges first
  assert len({(levels[3][i], levels[3][j]) for i, j in ((0, 1), (2, 3))}) == 2
  for fine, coarse in ((4, 3), (3, 2)):  # nested: components together stay together
    for i in range(5):
      for j in range(5):
        if levels[fine][i] == levels[fine][j]:
          assert levels[coarse][i] == levels[coarse][j]
  with pytest.raises(ValueError, match="means"):
    certificate.hierarchy(means[:2])


def test_a_run_reports_each_coarser_property_and_the_witness_usage(seed_dir, tmp_path):
  """The summary's property margins, recomputed in float64 from predictions.npz."""
  from certvae_jax import train  # pylint: disable=import-outside-toplevel
  from tests.conftest import copy_seed, tiny_config  # pylint: disable=import-outside-toplevel
  wd = copy_seed(seed_dir, str(tmp_path / "w"))
  runner = train.Runner(tiny_config(), wd)
  summary = runner.run_mode("full")
  levels = certificate.hierarchy(np.asarray(runner.teachers.function.gmm.means))
  pred = np.load(f"{wd}/full/predictions.npz")
  for split in ("train", "test"):
    t, s = pred[f"{split}_teacher"].astype(np.float64), pred[f"{split}_witness"].astype(np.float64)
    margins = summary[split]["property_margins"]
    assert sorted(int(g) for g in margins) == sorted(levels)
    for g, ids in levels.items():
      tc, sc = certificate.coarsen(t, ids), certificate.coarsen(s, ids)
      tbar = tc.mean(0)
      expected = (_kl_rows(tc, np.broadcast_to(tbar, tc.shape)) - 0.05 - _kl_rows(tc, sc))
      assert margins[str(g)] == pytest.approx(expected, abs=1e-4)
    use = summary[split]["witness_usage"]
    hard = np.bincount(s.argmax(1), minlength=10) / len(s)
    np.testing.assert_allclose(use["hard_usage"], hard)
    assert use["components_used"] == int((hard > 0.01).sum())
    assert summary[split]["teacher_usage"]["components_used"] >= 1
