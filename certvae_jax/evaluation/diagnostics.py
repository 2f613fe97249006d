"""Diagnostics reported beside the certificate (paper 1, section 4.3; appendix C).

None of them is a certificate: a model can score well on each and still have a
constant raw witness, and the reverse. All run on the host in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def psnr(squared_error_per_example: np.ndarray) -> float:
  """PSNR in dB on the [0, 1] scale from per-example mean squared errors.

  ``10 log10(1 / MSE)`` with MSE averaged over the whole split.
  """
  mse = float(np.mean(np.asarray(squared_error_per_example, np.float64)))
  return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def active_units(mu: np.ndarray, threshold: float = 0.01) -> int:
  """Number of latent dimensions with ``Cov_x(mu(x))_d > threshold`` (Burda et al. 2016).

  Uses the unbiased variance over the split.
  """
  mu = np.asarray(mu, np.float64)
  if len(mu) < 2:
    return 0
  return int(np.sum(np.var(mu, axis=0, ddof=1) > threshold))


def mean_squared_norm(mu: np.ndarray) -> float:
  """``E ||mu(x)||^2`` over the split (latent energy; paper 2)."""
  return float(np.mean(np.sum(np.square(np.asarray(mu, np.float64)), axis=-1)))


def mutual_information_estimate(mu: np.ndarray, logvar: np.ndarray, batch_size: int,
                                seed: int = 0) -> float:
  """Minibatch estimate of ``I(x; z)`` under ``q`` (He et al. 2019, "Lagging inference networks").

  ``I = E_x E_q(z|x) log q(z|x) - E_z log q(z)`` with the aggregate posterior ``q(z)``
  approximated by the mixture of the batch's posteriors; one ``z`` per ``x``. The
  split is cut into consecutive batches of ``batch_size`` and the estimates averaged
  (weighted by batch length). It is biased and bounded by ``log(batch_size)``.
  """
  mu = np.asarray(mu, np.float64)
  logvar = np.asarray(logvar, np.float64)
  rng = np.random.default_rng(seed)
  total, count = 0.0, 0
  for start in range(0, len(mu), batch_size):
    m, lv = mu[start:start + batch_size], logvar[start:start + batch_size]
    b, d = m.shape
    var = np.exp(lv)
    z = m + np.sqrt(var) * rng.standard_normal(m.shape)
    neg_entropy = np.mean(-0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(1.0 + lv, axis=-1))
    # sum_d (z_id - m_jd)^2 / var_jd for every pair (i, j), expanded into matrix
    # products instead of a (b, b, d) array: about 20x faster, same value in float64.
    inv = 1.0 / var
    sq_dist = (np.square(z) @ inv.T - 2.0 * z @ (m * inv).T
               + np.sum(np.square(m) * inv, axis=-1)[None, :])
    log_q = -0.5 * (d * np.log(2 * np.pi) + np.sum(lv, -1)[None, :] + sq_dist)
    log_qz = logsumexp(log_q, axis=1) - np.log(b)
    total += b * (neg_entropy - np.mean(log_qz))
    count += b
  return float(total / count)


def linear_probe_accuracy(mu_train: np.ndarray, y_train: np.ndarray, mu_test: np.ndarray,
                          y_test: np.ndarray, seed: int = 0,
                          fit_rows: np.ndarray | None = None) -> tuple[float, float]:
  """Accuracy of a logistic-regression probe on ``mu`` fitted on the train split.

  Args:
    fit_rows: the training rows it is fitted on (default: every row); its train accuracy
      reads every row all the same.

  Returns:
    ``(train_accuracy, test_accuracy)``; the test figure is the held-out one.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  if len(np.unique(y_train)) < 2:
    return float("nan"), float("nan")
  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
  fit = slice(None) if fit_rows is None else fit_rows
  probe.fit(np.asarray(mu_train[fit], np.float64), np.asarray(y_train)[fit])
  return (float(probe.score(np.asarray(mu_train, np.float64), y_train)),
          float(probe.score(np.asarray(mu_test, np.float64), y_test)))


def usage(rows: np.ndarray, threshold: float = 0.01) -> dict[str, object]:
  """How many of the K components a set of rows uses (paper 1, section 6: teacher-relative
  partial collapse is read from the witness's usage, reported apart from the certificate).

  Args:
    rows: ``(N, K)`` probability rows (the witness's, or the teacher's).
    threshold: the share of argmax votes above which a component counts as used.

  Returns:
    ``hard_usage`` (the share of rows whose argmax is each component), ``components_used``
    (components with a share above ``threshold``), ``hard_usage_kl`` and ``soft_usage_kl``
    (KL to uniform of the argmax shares and of the mean row; 0 is balanced usage).
  """
  r = np.asarray(rows, np.float64)
  k = r.shape[1]
  hard = np.bincount(np.argmax(r, axis=1), minlength=k) / len(r)

  def kl_to_uniform(p: np.ndarray) -> float:
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * k)))

  return {"hard_usage": hard.tolist(), "components_used": int(np.sum(hard > threshold)),
          "hard_usage_kl": kl_to_uniform(hard), "soft_usage_kl": kl_to_uniform(r.mean(axis=0))}
