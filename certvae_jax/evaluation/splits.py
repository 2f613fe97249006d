"""Evaluation over the mesh: the certificate and diagnostics of one split.

The certificate is exact for the split's empirical distribution (paper 1, section
2.3): every quantity is a function of six mergeable sums, accumulated per batch on the
devices, reduced across them by XLA and merged in float64 on the host. The
diagnostics (PSNR, active units, KL, ``E ||mu||^2``, the MI estimate) are never a
substitute for it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from certvae_jax import certificate, data as data_lib, distributed
from certvae_jax.evaluation import diagnostics, posthoc
from certvae_jax.rng_streams import EVAL_SEED

# Rows of per-example outputs an evaluation lets the device compute ahead of the host.
FETCH_ROWS = 16384


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
  """``a`` padded to ``size`` rows with copies of its first row (finite values, which the
  evaluation masks out of every statistic)."""
  if len(a) == size:
    return a
  return np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)])


def padded_batches(x: np.ndarray, t: np.ndarray, batch_size: int,
                   sharding: jax.sharding.Sharding | None = None, place: bool = False
                   ) -> Iterator[tuple[int, tuple[Any, Any, Any]]]:
  """``(n, (x, t, mask))`` for each run of ``batch_size`` rows: every batch is padded to one
  shape (the padding masked out), so a function over them compiles once. On the mesh
  (``sharding``), or with ``place`` on the default device; else host arrays."""
  for start in range(0, len(x), batch_size):
    n = len(x[start:start + batch_size])
    batch = (pad_rows(x[start:start + batch_size], batch_size),
             pad_rows(t[start:start + batch_size], batch_size), np.arange(batch_size) < n)
    if sharding is not None:
      batch = tuple(distributed.global_batch(b, sharding) for b in batch)
    elif place:
      batch = tuple(jax.device_put(b) for b in batch)
    yield n, batch


def evaluate_split(eval_step, params, x: np.ndarray, t: np.ndarray,
                   eval_config: ml_collections.ConfigDict, rng: jax.Array,
                   sharding: jax.sharding.Sharding | None = None, probes: Sequence[Any] = (),
                   summarize: Callable[[dict[str, np.ndarray]], dict[str, float]] | None = None
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Certificate and diagnostics on one split, streamed in batches.

  Args:
    eval_step: from :func:`certvae_jax.training.step.make_eval_step`. With a subset of
      rows for the reconstruction side, and an objective that evaluates without the
      decoder, its ``latents`` run on every row and its ``reconstruct`` on the subset;
      otherwise the whole step runs on every row.
    params: the model parameters.
    x: the split's inputs (uint8 pixels or floats in [0, 1]).
    t: the teacher's rows on ``x``.
    eval_config: ``config.eval`` (``batch_size``, ``tau``, ``active_unit_threshold``,
      ``mi_batch_size``, ``reconstruction_check_rows``).
    rng: the evaluation key (used for the reconstruction's sampled ``z``).
    sharding: the mesh's batch sharding; each padded batch is split across devices.
    probes: extra per-example diagnostics, each with ``batch(params, x) -> {name: (B,)}``
      (run on padded batches of the split, or of a fixed random subset of
      ``reconstruction_check_rows`` of its rows: :func:`probe_subset`) and ``metrics(arrays, teacher_mi, tau) -> dict``
      (e.g. :class:`certvae_jax.evaluation.recon_check.ReconstructionCheck`).
    summarize: the objective's extra split metrics from the per-example outputs
      (:attr:`certvae_jax.objectives.Objective.summarize`).

  Returns:
    ``(metrics, arrays)``: JSON-ready metrics, and host arrays (``mu``, ``logvar``,
    ``witness``, ``teacher``, ...) for probes and saved predictions.
  """
  # The reconstruction side (the probes, and the decoder's outputs where the objective can
  # evaluate without the decoder) may run on a fixed subset of the rows; the certificate
  # and the latent statistics never do.
  rows = probe_subset(len(x), int(eval_config.get("reconstruction_check_rows", 0)))
  px, pt = (x, t) if rows is None else (x[rows], t[rows])
  latents = getattr(eval_step, "latents", None)
  reconstruct = eval_step.reconstruct if rows is not None and latents is not None else None
  every_row = latents if reconstruct is not None else eval_step
  stats = certificate.CertificateStats.zeros(t.shape[1])
  arrays: dict[str, np.ndarray] = {}
  pending: list[tuple[int, Any]] = []
  filled = 0

  def fetch() -> None:
    # The device runs ahead while the host sends the next batches; fetching every
    # FETCH_ROWS rows keeps a large split's outputs from being held on the device and on
    # the host at once, and each output is written in place into its split-sized array
    # (no chunks to concatenate). The sums merge in the same order either way.
    nonlocal stats, filled
    for n, (out, batch_stats) in jax.device_get(pending):
      stats = stats.merge(batch_stats)
      for key, value in out.items():
        if key not in arrays:
          arrays[key] = np.empty((len(x),) + value.shape[1:], value.dtype)
        arrays[key][filled:filled + n] = value[:n]
      filled += n
    pending.clear()

  for i, (n, batch) in enumerate(padded_batches(x, t, eval_config.batch_size, sharding)):
    pending.append((n, every_row(params, *batch, jax.random.fold_in(rng, i))))
    if len(pending) * eval_config.batch_size >= FETCH_ROWS:
      fetch()
  probed: dict[str, list[tuple[int, Any]]] = {}
  subset = (padded_batches(px, pt, eval_config.batch_size, sharding)
            if probes or reconstruct is not None else ())
  for i, (n, batch) in enumerate(subset):
    found = reconstruct(params, *batch[:2], jax.random.fold_in(rng, i)) if reconstruct else {}
    for probe in probes:
      found = dict(found, **probe.batch(params, batch[0]))
    for key, value in found.items():
      probed.setdefault(key, []).append((n, value))
  fetch()
  for key, chunks in jax.device_get(probed).items():
    arrays[key] = np.concatenate([np.asarray(value)[:n] for n, value in chunks])
  rep = stats.finalize(eval_config.tau)
  kl_per_dim = arrays["kl_dim"].astype(np.float64).mean(0)
  rec = float(arrays["rec"].astype(np.float64).mean())
  metrics = rep.to_dict()
  metrics.update(
      certifiable=rep.certifiable,
      rec=rec, kl=float(kl_per_dim.sum()), elbo=-(rec + float(kl_per_dim.sum())),
      kl_per_dim=[float(v) for v in kl_per_dim],
      psnr=diagnostics.psnr(arrays["sq_err"]),
      active_units=diagnostics.active_units(arrays["mu"], eval_config.active_unit_threshold),
      mean_sq_norm_mu=diagnostics.mean_squared_norm(arrays["mu"]),
      mi_estimate=diagnostics.mutual_information_estimate(
          arrays["mu"], arrays["logvar"], eval_config.mi_batch_size),
      mi_estimate_batch_size=int(min(eval_config.mi_batch_size, len(x))))
  # The rows rec, PSNR and the ELBO's reconstruction term read.
  metrics["reconstruction_rows"] = len(px) if reconstruct is not None else len(x)
  for probe in probes:
    metrics.update(probe.metrics(arrays, rep.teacher_mi, eval_config.tau),
                   reconstruction_check_rows=len(px))
  if summarize is not None:
    metrics.update(summarize(arrays))
  if "used_alignment" in metrics:  # a used head's margin, beside the raw head's certificate
    metrics["used_margin"] = float(rep.teacher_mi) - float(eval_config.tau) - float(
        metrics["used_alignment"])
  arrays["teacher"] = np.asarray(t)
  return metrics, arrays


def probe_subset(n: int, limit: int) -> np.ndarray | None:
  """The sorted rows (a fixed random subset) of ``limit`` of ``n`` rows, or None for all
  of them (``limit`` 0 or at least ``n``)."""
  if limit <= 0 or limit >= n:
    return None
  return np.sort(np.random.default_rng(EVAL_SEED).choice(n, limit, replace=False))


def evaluate_splits(eval_step, params, splits, eval_config, sharding=None, labels=None,
                    probes=(), summarize=None) -> tuple[dict[str, dict], dict[str, dict]]:
  """:func:`evaluate_split` on each ``(name, x, t)`` of ``splits``, and the linear probe.

  ``labels`` is ``{name: y or None}``; with labels on the train and test splits, each
  split's metrics gain ``probe_accuracy`` (a linear probe on ``mu``, fitted on at most
  ``eval_config.probe_fit_rows`` training rows, a fixed random subset: its iterations, like
  the post-hoc head's, grow with the rows) and ``probe_fit_rows``.
  """
  labels = labels or {}
  metrics, arrays = {}, {}
  for name, x, t in splits:
    metrics[name], arrays[name] = evaluate_split(
        eval_step, params, x, t, eval_config, jax.random.PRNGKey(EVAL_SEED), sharding, probes,
        summarize)
  if labels.get("train") is not None and labels.get("test") is not None:
    mu_train = arrays["train"]["mu"]
    fit = probe_subset(len(mu_train), int(eval_config.get("probe_fit_rows", 0)))
    accuracy = diagnostics.linear_probe_accuracy(
        mu_train, labels["train"], arrays["test"]["mu"], labels["test"], fit_rows=fit)
    for name, acc in zip(("train", "test"), accuracy):
      metrics[name].update(probe_accuracy=acc,
                           probe_fit_rows=len(mu_train) if fit is None else len(fit))
  return metrics, arrays


def final_analyses(splits: dict[str, dict], arrays: dict[str, dict],
                   eval_config: ml_collections.ConfigDict, with_teacher: bool,
                   property_groups: dict[int, np.ndarray] | None = None) -> str | None:
  """What a run's summary adds to its last evaluation, in place; returns ``collapse``.

  With a teacher: the post-hoc linear head of each split (fitted on at most
  ``eval_config.posthoc_fit_rows`` training rows, a fixed random subset) and the ``collapse``
  verdict (:mod:`certvae_jax.evaluation.posthoc`), the witness's and the teacher's component usage
  (paper 1, section 6), and with ``property_groups`` (``{G: group ids}``) the margin of each
  coarser property (``property_margins``, Corollary 2). Always: the test split's population
  ``bounds`` (:mod:`certvae_jax.certificate.bounds`); its rows never trained the witness or
  fitted the teacher, and the evaluation key makes them reproducible.
  """
  verdict = None
  if with_teacher:
    for sp in ("train", "test"):
      t, s = arrays[sp]["teacher"], arrays[sp]["witness"]
      splits[sp]["witness_usage"] = diagnostics.usage(s)
      splits[sp]["teacher_usage"] = diagnostics.usage(t)
      if property_groups:
        splits[sp]["property_margins"] = property_margins(t, s, property_groups,
                                                          eval_config.tau)
    # The head reads the code the raw witness reads: mu, or an objective's own ``code``.
    code = {sp: arrays[sp].get("code", arrays[sp]["mu"]) for sp in ("train", "test")}
    # Fitted on a fixed random subset of the training rows (its cost per L-BFGS iteration
    # grows with the rows), certified on every row of each split.
    mu_fit, t_fit = code["train"], arrays["train"]["teacher"]
    fit = probe_subset(len(mu_fit), int(eval_config.get("posthoc_fit_rows", 0)))
    if fit is not None:
      mu_fit, t_fit = mu_fit[fit], t_fit[fit]
    fitted = posthoc.posthoc_metrics(
        mu_fit, t_fit, {sp: (code[sp], arrays[sp]["teacher"]) for sp in ("train", "test")},
        eval_config.tau, eval_config.posthoc_max_iter)
    for sp in ("train", "test"):
      splits[sp].update(fitted[sp], posthoc_fit_rows=len(mu_fit))
    verdict = posthoc.collapse(splits["test"]["certified"], splits["test"]["posthoc_certified"])
  splits["test"]["bounds"] = certificate.margin_bounds(
      arrays["test"]["teacher"], arrays["test"]["witness"], tau=eval_config.tau,
      delta=eval_config.delta, num_resamples=eval_config.bootstrap_resamples,
      key=jax.random.PRNGKey(EVAL_SEED)).to_dict()
  return verdict


def property_margins(t: np.ndarray, s: np.ndarray, groups: dict[int, np.ndarray],
                     tau: float) -> dict[str, float]:
  """``{str(G): margin}`` of each coarser property (paper 1, Corollary 2) in ``groups``
  (``{G: group ids}``), the finest first.

  The rows go to the device once; each level is their product with a 0/1 membership
  matrix, padded with zero columns to K (which add nothing to any term), so that every
  level runs in one compiled loop (a K = 100 hierarchy has 98 levels).
  """
  levels = sorted(groups.items(), reverse=True)
  k = t.shape[1]
  members = np.zeros((len(levels), k, k), np.float32)
  for i, (_, ids) in enumerate(levels):
    members[i, np.arange(k), ids] = 1.0
  margins = np.asarray(_level_margins(t, s, members, np.float32(tau)))
  return {str(g): float(m) for (g, _), m in zip(levels, margins)}


@jax.jit
def _level_margins(t: jax.Array, s: jax.Array, members: jax.Array, tau: jax.Array) -> jax.Array:
  def margin(m):
    coarse = lambda p: jnp.matmul(p, m, precision="highest")  # noqa: E731
    return certificate.report(coarse(t), coarse(s), tau, validate=False).margin
  return jax.lax.map(margin, members)


def map_batches(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
  """``fn`` over ``x`` in batches (scaled to [0, 1] on the host), concatenated. ``fn`` must
  map rows independently: the last batch is padded to ``batch_size`` rows and the padding's
  outputs dropped, so that every batch of every split has one shape (one compilation)."""
  out = []
  for start in range(0, len(x), batch_size):
    rows = x[start:start + batch_size]
    out.append(np.asarray(fn(data_lib.to_unit(pad_rows(rows, batch_size))))[:len(rows)])
  return np.concatenate(out)
