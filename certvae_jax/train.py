"""Training: the pure train step, evaluation, and the loop for every mode.

Modes (paper 1, section 3; SPEC section 3):

==========  =================================================================
``warmup``  plain VAE at ``warmup.alpha_kl``; its encoder means feed the teacher
``full``    all terms on
``noalign`` ``lambda_TS = 0`` (balance and the head stay): the collapse control
``rescue``  restores the final ``noalign`` checkpoint exactly (parameters,
            optimizer, step, RNG, data position) and continues with alignment on
``vae``     plain VAE (``lambda_TS = lambda_bal = 0``) scored by the same witness:
            paper 2's baseline row
``rst_prefit`` paper 2: regress the encoder mean onto the analytic code of the
            fixed simplex witness (phase ``prefit``), then train with all terms on
==========  =================================================================

With ``model.head = 'simplex'`` the witness is paper 2's fixed simplex witness and
``full`` is its RST-VAE. With ``teacher.kind = 'label_smoothed'`` the teacher is
``(1 - eps) e_y + eps / K`` from the labels (no warm-up, no search).

Each of ``full`` / ``noalign`` / ``rescue`` runs against the live frozen teacher
``T(x)`` (``target='live'``) or the cached targets ``T_fix`` (``target='fixed'``,
paper 1, section 3). With our frozen teacher (GMM + warm-up encoder snapshot) both
give the same numbers on training inputs; the fixed variant reads them from the
cache and is what the paper's Tiny-ImageNet-200 protocol uses.

Workdir layout (one seed)::

    WORKDIR/warmup/{checkpoints/, metrics.jsonl, summary.json}
    WORKDIR/teacher/{teacher.npz, teacher.json, targets_train.npy}
    WORKDIR/<mode>[_fixed]/{checkpoints/, metrics.jsonl, summary.json, predictions.npz}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from certvae_jax import certificate, data as data_lib, diagnostics, distributed, losses, simplex
from certvae_jax import teacher as teacher_lib
from certvae_jax.checkpoint import Checkpointer, IncompatibleCheckpoint, check_compatible
from certvae_jax.models.vae import TeacherGuidedVAE, build_model, init_params
from certvae_jax.workdir import WorkdirLock, clear_workdir

MODES = ("warmup", "full", "noalign", "rescue", "vae", "rst_prefit")
TARGETS = ("live", "fixed")


class TrainingDiverged(RuntimeError):
  """A non-finite loss; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
  """Everything the step changes. ``rng`` is a raw ``uint32[2]`` key; ``skipped``
  counts batches skipped for a non-finite loss or gradient (``train.skip_nonfinite``)."""
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray


# ---------------------------------------------------------------------------
# The pure step.
# ---------------------------------------------------------------------------


def make_train_step(model: TeacherGuidedVAE, tx: optax.GradientTransformation,
                    align_on_mean: bool = False, skip_nonfinite: bool = False,
                    nll: Callable[..., jnp.ndarray] = losses.bernoulli_nll_per_example
                    ) -> Callable[..., tuple[TrainState, dict]]:
  """Builds ``train_step(state, batch, weights) -> (state, metrics)``, jitted, state donated.

  Args:
    model: the VAE.
    tx: the optimizer.
    align_on_mean: align the witness at ``mu`` instead of the sampled ``z``.
    skip_nonfinite: skip non-finite batches instead of letting the loop stop.
    nll: per-example reconstruction ``-log p(x|z)`` (see ``losses.reconstruction_nll``).

  The batch holds ``x`` ``(B, D)`` and ``t`` ``(B, K)`` (teacher rows; uniform rows
  in warm-up). ``weights`` is a :class:`~certvae_jax.losses.LossWeights` of scalars,
  traced, so every mode (and any schedule of weights) shares one compiled step;
  ``lambda_ts = lambda_bal = 0`` is a plain VAE. The step's randomness is
  ``fold_in(state.rng, state.step)``: it does not depend on history or on the number
  of devices. With ``skip_nonfinite`` a batch whose loss or gradient is not finite
  leaves parameters and optimizer unchanged (the step and data position advance,
  ``state.skipped`` counts it); otherwise the loop stops on it.
  """

  def loss_fn(params, x, t, rng, weights):
    mu, logvar = model.apply({"params": params}, x, method=TeacherGuidedVAE.encode)
    z = losses.reparameterize(rng, mu, logvar)
    rec = jnp.mean(nll(model.apply({"params": params}, z, t, method=TeacherGuidedVAE.decode), x))
    kl = losses.gaussian_kl(mu, logvar)
    logits = model.apply({"params": params}, mu if align_on_mean else z,
                         method=TeacherGuidedVAE.witness_logits)
    align = losses.alignment(t, logits)
    bal = losses.balance(logits)
    loss = (rec + weights.alpha_kl * kl + weights.lambda_ts * align
            + weights.lambda_bal * bal)
    return loss, {"rec": rec, "kl": kl, "align": align, "bal": bal}

  def train_step(state: TrainState, batch: dict[str, jnp.ndarray],
                 weights: losses.LossWeights):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch["x"], batch["t"], rng, weights)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    skipped = state.skipped
    if skip_nonfinite:
      ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.global_norm(params)))
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
      skipped = skipped + (~ok).astype(skipped.dtype)
      # Reported finite so that the loop does not stop; the skip is in the counter.
      loss, grad_norm = jnp.where(ok, loss, 0.0), jnp.where(ok, grad_norm, 0.0)
      terms = {k: jnp.where(ok, v, 0.0) for k, v in terms.items()}
    metrics = dict(terms, loss=loss, grad_norm=grad_norm,
                   param_norm=optax.global_norm(params), skipped=skipped)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                      rng=state.rng, skipped=skipped), metrics

  return jax.jit(train_step, donate_argnums=0)


def make_prefit_step(model: TeacherGuidedVAE, tx: optax.GradientTransformation, k: int,
                     beta: float) -> Callable[..., tuple[TrainState, dict]]:
  """RST-prefit's first stage (paper 2): regress ``mu(x)`` onto the analytic code.

  The target is the least-norm code of the fixed simplex witness: ``mu*(x)`` on the
  first ``K-1`` coordinates and 0 elsewhere. Same signature as the train step
  (``weights`` is ignored) so that it runs in the same loop.
  """

  def loss_fn(params, x, t):
    mu, _ = model.apply({"params": params}, x, method=TeacherGuidedVAE.encode)
    code = simplex.analytic_code_unchecked(t, beta)
    mse = jnp.mean(jnp.sum(jnp.square(mu[:, : k - 1] - code), axis=-1)
                   + jnp.sum(jnp.square(mu[:, k - 1:]), axis=-1))
    return mse

  def prefit_step(state: TrainState, batch: dict[str, jnp.ndarray], weights=None):
    del weights
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch["x"], batch["t"])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "code_mse": loss, "grad_norm": optax.global_norm(grads),
               "param_norm": optax.global_norm(params)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                      rng=state.rng, skipped=state.skipped), metrics

  return jax.jit(prefit_step, donate_argnums=0)


def make_eval_fn(model: TeacherGuidedVAE,
                 nll: Callable[..., jnp.ndarray] = losses.bernoulli_nll_per_example,
                 out_sharding: jax.sharding.Sharding | None = None
                 ) -> Callable[..., tuple[dict, certificate.CertificateStats]]:
  """Jitted per-batch evaluation: latent statistics, ELBO terms and certificate sums.

  The certificate reads the raw witness at the encoder mean ``z = mu(x)`` (SPEC 1).
  ``out_sharding`` (replicated) gathers the per-example outputs to every process.
  """

  def eval_batch(params, x, t, mask, rng):
    x = data_lib.to_unit(x)  # uint8 pixels travel as bytes, a quarter of float32's
    v = {"params": params}
    mu, logvar = model.apply(v, x, method=TeacherGuidedVAE.encode)
    z = losses.reparameterize(rng, mu, logvar)
    rec = nll(model.apply(v, z, t, method=TeacherGuidedVAE.decode), x)
    mean_image = jax.nn.sigmoid(model.apply(v, mu, t, method=TeacherGuidedVAE.decode))
    logits = model.apply(v, mu, method=TeacherGuidedVAE.witness_logits)
    out = {"mu": mu, "logvar": logvar, "rec": rec,
           "sq_err": jnp.mean(jnp.square(mean_image - x), axis=-1),
           "kl_dim": losses.gaussian_kl_per_dim(mu, logvar),
           "witness": jax.nn.softmax(logits, axis=-1)}
    return out, certificate.batch_stats(t, logits, from_logits=True, mask=mask)

  return jax.jit(eval_batch, out_shardings=out_sharding)


# ---------------------------------------------------------------------------
# Run context: data, model, mesh, teacher.
# ---------------------------------------------------------------------------


class Context(NamedTuple):
  config: ml_collections.ConfigDict
  data: data_lib.Dataset
  mesh: Mesh
  num_classes: int


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the values a run depends on before any long computation.

  Raises:
    ValueError: naming the config field and the problem.
  """
  def positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      raise ValueError(f"config.{name}: expected an integer >= 1, got {value!r}")

  def non_negative(name, value):
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
        or not math.isfinite(value) or value < 0):
      raise ValueError(f"config.{name}: expected a finite number >= 0, got {value!r}")

  for name in ("warmup.steps", "train.steps", "train.batch_size", "train.log_every",
               "train.checkpoint_every", "eval.every", "eval.batch_size", "eval.mi_batch_size"):
    section, field = name.split(".")
    positive_int(name, config[section][field])
  for name in ("warmup.alpha_kl", "train.alpha_kl", "train.lambda_ts", "train.lambda_bal",
               "eval.tau"):
    section, field = name.split(".")
    non_negative(name, config[section][field])
  lr = config.train.learning_rate
  if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
    raise ValueError(f"config.train.learning_rate: expected a finite number > 0, got {lr!r}")
  for name in ("teacher.min_mass", "teacher.min_mi", "teacher.max_hard_balance_kl",
               "teacher.max_soft_usage_kl", "teacher.high_margin", "eval.active_unit_threshold",
               "teacher.reg_covar"):
    section, field = name.split(".")
    non_negative(name, config[section][field])
  t = config.teacher
  if not isinstance(t.min_mean_margin, (int, float)) or not math.isfinite(t.min_mean_margin):
    raise ValueError(f"config.teacher.min_mean_margin: expected a finite number, got "
                     f"{t.min_mean_margin!r}")
  positive_int("teacher.max_iter", t.max_iter)
  for name, seq in (("teacher.components", t.components), ("teacher.seeds", t.seeds),
                    ("teacher.covariance_types", t.covariance_types)):
    if not isinstance(seq, (tuple, list)) or not seq:
      raise ValueError(f"config.{name}: expected a non-empty tuple, got {seq!r}")
  for k in t.components:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
      raise ValueError(f"config.teacher.components: each K must be an integer >= 2, got {k!r}")
  for seed in t.seeds:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
      raise ValueError(f"config.teacher.seeds: each seed must be an integer >= 0, got {seed!r}")
  for ct in t.covariance_types:
    if ct not in teacher_lib.COVARIANCE_TYPES:
      raise ValueError(f"config.teacher.covariance_types: unknown {ct!r}; expected one of "
                       f"{teacher_lib.COVARIANCE_TYPES}")
  for name in ("train.align_on_mean", "train.progress", "train.skip_nonfinite",
               "model.decoder_reads_teacher", "data.on_device"):
    section, field = name.split(".")
    if not isinstance(config[section][field], bool):
      raise ValueError(f"config.{name}: expected True or False, got {config[section][field]!r}")
  if config.teacher.kind not in ("gmm", "label_smoothed"):
    raise ValueError(f"config.teacher.kind: expected 'gmm' or 'label_smoothed', got "
                     f"{config.teacher.kind!r}")
  if not 0.0 <= config.teacher.eps <= 1.0:
    raise ValueError(f"config.teacher.eps: expected a value in [0, 1], got {config.teacher.eps}")
  positive_int("train.prefit_steps", config.train.prefit_steps)
  if config.train.init not in ("warmup", "fresh"):
    raise ValueError(f"config.train.init: expected 'warmup' or 'fresh', got {config.train.init!r}")
  if not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
    raise ValueError(f"config.seed: expected an integer >= 0, got {config.seed!r}")
  if not isinstance(config.teacher.eps, (int, float)) or not math.isfinite(config.teacher.eps):
    raise ValueError(f"config.teacher.eps: expected a number in [0, 1], got {config.teacher.eps!r}")


def make_context(config: ml_collections.ConfigDict) -> Context:
  """Validates the config, loads the data, checks the model builds, makes the mesh."""
  validate_config(config)
  data = data_lib.load_dataset(config.data.source, test_fraction=config.data.test_fraction,
                               split_seed=config.data.split_seed,
                               data_dir=config.data.data_dir or None)
  data_lib.steps_per_epoch(len(data.x_train), config.train.batch_size)
  if config.teacher.kind == "label_smoothed":
    if data.y_train is None or data.y_test is None:
      raise ValueError("config.teacher.kind: 'label_smoothed' needs labels (y and y_test) in "
                       f"the data source {config.data.source!r}")
    if data.num_classes < 2:
      raise ValueError("config.teacher.kind: 'label_smoothed' needs at least 2 classes")
    k = data.num_classes
  else:
    for kk in config.teacher.components:
      if int(kk) > len(data.x_train):
        raise ValueError(f"config.teacher.components: K={kk} exceeds the {len(data.x_train)} "
                         "training examples")
    k = int(config.teacher.components[0])
  # A bad model config fails now, before any work.
  build_model(config.model, int(data.x_train.shape[1]), k, data.example_shape)
  losses.reconstruction_nll(config.model.likelihood, float(config.model.gaussian_scale))
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  for name in ("train.batch_size", "eval.batch_size"):
    section, field = name.split(".")
    if config[section][field] % mesh.size:
      raise ValueError(f"config.{name}: {config[section][field]} must divide by the "
                       f"{mesh.size} devices of the data-parallel mesh")
  return Context(config, data, mesh, k)


def fingerprint(config: ml_collections.ConfigDict, *extra: Any) -> str:
  """Hash of what shapes a run's results (data, model, seed, teacher grid).

  Step counts and logging intervals are left out so a run can be extended, and
  ``data.on_device`` because it moves the same batches, not different ones.
  """
  data = {k: v for k, v in config.data.to_dict().items() if k != "on_device"}
  blob = json.dumps({"data": data, "model": config.model.to_dict(),
                     "seed": config.seed, "extra": extra}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _phase_weights(config, mode: str) -> losses.LossWeights:
  if mode == "warmup":
    return losses.LossWeights(config.warmup.alpha_kl, 0.0, 0.0)
  if mode == "vae":
    return losses.LossWeights(config.train.alpha_kl, 0.0, 0.0)
  lambda_ts = 0.0 if mode == "noalign" else config.train.lambda_ts
  return losses.LossWeights(config.train.alpha_kl, lambda_ts, config.train.lambda_bal)


# Full, noalign and rescue share one data stream and one RNG stream, so the variants
# differ only in the objective (paper 1, table 8); rescue continues noalign's.
_WARMUP_CODE, _VARIANT_CODE, _PREFIT_CODE = 0, 1, 2


def _data_seed(seed: int, phase_code: int) -> int:
  return int(seed) * 16 + phase_code


# ---------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------


def evaluate_split(eval_fn, params, x: np.ndarray, t: np.ndarray, config,
                   rng: jax.Array, sharding: jax.sharding.Sharding | None = None
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Certificate and diagnostics on one split, streamed in batches.

  With ``sharding`` (the mesh's batch sharding) each padded batch is split across the
  devices; the certificate sums are reduced by XLA and merged in float64 on the host.

  Returns:
    ``(metrics, arrays)``: JSON-ready metrics, and host arrays (``mu``, ``logvar``,
    ``witness``, ``teacher``) for probes and saved predictions.
  """
  stats = certificate.CertificateStats.zeros(t.shape[1])
  bs = config.eval.batch_size
  results = []
  for i, start in enumerate(range(0, len(x), bs)):
    # Every batch is padded to one shape (masked rows) so evaluation compiles once.
    n = len(x[start:start + bs])
    batch = (_pad(x[start:start + bs], bs), _pad(t[start:start + bs], bs), np.arange(bs) < n)
    if sharding is not None:
      batch = tuple(distributed.global_batch(b, sharding) for b in batch)
    results.append((n, eval_fn(params, *batch, jax.random.fold_in(rng, i))))
  # Fetched once at the end, so the device runs ahead while the host sends the next
  # batches (the outputs are per-example vectors, small next to the inputs).
  parts: dict[str, list[np.ndarray]] = {}
  for n, (out, batch_stats) in jax.device_get(results):
    stats = stats.merge(batch_stats)
    for key, value in out.items():
      parts.setdefault(key, []).append(np.asarray(value)[:n])
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  rep = stats.finalize(config.eval.tau)
  kl_per_dim = arrays["kl_dim"].astype(np.float64).mean(0)
  rec = float(arrays["rec"].astype(np.float64).mean())
  metrics = rep.to_dict()
  metrics.update(
      certifiable=rep.certifiable,
      rec=rec, kl=float(kl_per_dim.sum()), elbo=-(rec + float(kl_per_dim.sum())),
      kl_per_dim=[float(v) for v in kl_per_dim],
      psnr=diagnostics.psnr(arrays["sq_err"]),
      active_units=diagnostics.active_units(arrays["mu"], config.eval.active_unit_threshold),
      mean_sq_norm_mu=diagnostics.mean_squared_norm(arrays["mu"]),
      mi_estimate=diagnostics.mutual_information_estimate(
          arrays["mu"], arrays["logvar"], config.eval.mi_batch_size),
      mi_estimate_batch_size=int(min(config.eval.mi_batch_size, len(x))))
  arrays["teacher"] = np.asarray(t)
  return metrics, arrays


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  if len(a) == size:
    return a
  # Pad with copies of the first row: finite values, masked out of every statistic.
  return np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)])


# ---------------------------------------------------------------------------
# One phase: init or restore, loop, evaluate, summarise.
# ---------------------------------------------------------------------------


class Phase(NamedTuple):
  """What one run of the loop needs."""
  name: str                 # directory name: warmup, full, noalign_fixed, ...
  mode: str
  target: str
  total_steps: int
  weights: losses.LossWeights
  data_seed: int
  meta: dict[str, Any]      # must match on restore


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    json.dump(obj, fh, indent=1, allow_nan=True)
  os.replace(tmp, path)


def _truncate_metrics(path: str, step: int) -> None:
  """Drops evaluation rows after ``step`` (left by a run that died after evaluating)."""
  if not os.path.exists(path):
    return
  with open(path) as fh:
    rows = [line for line in fh if line.strip() and json.loads(line)["step"] <= step]
  with open(path + ".tmp", "w") as fh:
    fh.writelines(rows)
  os.replace(path + ".tmp", path)


class Runner:
  """Runs the phases of one seed in one workdir (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               log: Callable[[str], None] | None = None, overwrite: bool = False):
    self.ctx = make_context(config)
    self.config = config
    self.workdir = workdir
    self.overwrite = overwrite
    self.main = distributed.is_main()  # process 0 writes files and logs; see distributed.py
    self._lock = WorkdirLock(workdir) if self.main else contextlib.nullcontext()
    sink = log or (lambda msg: print(msg, file=sys.stderr))
    self.log = sink if self.main else (lambda msg: None)
    d = self.ctx.data
    self.input_dim = int(d.x_train.shape[1])
    self._replicated = NamedSharding(self.ctx.mesh, P())
    self._batch_sharding = NamedSharding(self.ctx.mesh, P("data"))
    self.teacher: teacher_lib.FrozenTeacher | None = None
    self.teacher_info: dict[str, Any] | None = None
    self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}

  def compiled(self, name: str, num_classes: int) -> Callable[..., Any]:
    """The jitted ``init`` / ``step`` / ``eval`` / ``encode`` / ``teacher`` function for
    K classes, built once per run so that the phases share compilations."""
    key = (name, num_classes)
    if key not in self._compiled:
      model, tx = self.model(num_classes), self.optimizer()
      if name == "init":
        def init(phase_code):
          params = init_params(model, jax.random.PRNGKey(self.config.seed), self.input_dim,
                               num_classes)
          return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                            opt_state=tx.init(params),
                            rng=jax.random.fold_in(jax.random.PRNGKey(self.config.seed),
                                                   phase_code),
                            skipped=jnp.asarray(0, jnp.int32))
        fn = jax.jit(init, out_shardings=self._replicated)
      elif name == "step":
        fn = make_train_step(model, tx, self.config.train.align_on_mean,
                             bool(self.config.train.skip_nonfinite), self._nll())
      elif name == "prefit":
        fn = make_prefit_step(model, tx, num_classes, float(self.config.model.witness_beta))
      elif name == "eval":
        fn = make_eval_fn(model, self._nll(), self._replicated)
      elif name == "encode":
        fn = jax.jit(lambda p, xb: model.apply({"params": {"encoder": p}}, xb,
                                               method=TeacherGuidedVAE.encode)[0])
      elif name == "teacher":
        def encoder_apply(variables, x):
          return model.apply({"params": {"encoder": variables["params"]}}, x,
                             method=TeacherGuidedVAE.encode)
        fn = jax.jit(lambda teacher, x: teacher_lib.teacher_probs(encoder_apply, teacher, x))
      else:
        raise KeyError(name)
      self._compiled[key] = fn
    return self._compiled[key]

  # -- model and state ------------------------------------------------------

  def model(self, num_classes: int) -> TeacherGuidedVAE:
    return build_model(self.config.model, self.input_dim, num_classes,
                       self.ctx.data.example_shape)

  def _nll(self) -> Callable[..., jnp.ndarray]:
    m = self.config.model
    return losses.reconstruction_nll(m.likelihood, float(m.gaussian_scale))

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.config.train.learning_rate)

  def fresh_state(self, num_classes: int, phase_code: int) -> TrainState:
    """A new state (parameters initialised from ``config.seed``), built in one jit."""
    return self.compiled("init", num_classes)(jnp.asarray(phase_code, jnp.uint32))

  def state_template(self, num_classes: int) -> TrainState:
    """Shapes and dtypes of a state, for restoring (nothing is computed)."""
    return jax.eval_shape(lambda: self.fresh_state(num_classes, 0))

  def restore(self, ckpt: Checkpointer, num_classes: int, step: int | None = None):
    """``(state, meta)`` from ``ckpt``, replicated over the mesh."""
    return ckpt.restore(self.state_template(num_classes), step=step, sharding=self._replicated)

  # -- phases --------------------------------------------------------------

  def phase_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def checkpointer(self, phase_name: str) -> Checkpointer:
    return Checkpointer(os.path.join(self.phase_dir(phase_name), "checkpoints"), log=self.log)

  def _guarded(self, fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` holding the workdir lock; with ``overwrite``, an incompatible
    workdir is cleared and ``fn`` retried once."""
    with self._lock:
      try:
        return fn()
      except IncompatibleCheckpoint as e:
        if not self.overwrite:
          raise
        self.log(f"{e}\n--overwrite: clearing {self.workdir!r} and starting again")
        if self.main:
          clear_workdir(self.workdir)
        distributed.barrier("overwrite")
        self.teacher = self.teacher_info = None
        return fn()

  def run_warmup(self) -> dict[str, Any]:
    """Warm-up VAE; resumes or returns its summary when already complete."""
    return self._guarded(self._run_warmup)

  def _run_warmup(self) -> dict[str, Any]:
    k = self.ctx.num_classes
    phase = Phase("warmup", "warmup", "none", self.config.warmup.steps,
                  _phase_weights(self.config, "warmup"),
                  _data_seed(self.config.seed, _WARMUP_CODE),
                  {"fingerprint": fingerprint(self.config, "warmup",
                                              self.config.warmup.alpha_kl)})
    return self._run_phase(phase, k, lambda: self.fresh_state(k, _WARMUP_CODE),
                           teacher_fn=None)

  def ensure_teacher(self) -> tuple[teacher_lib.FrozenTeacher | None, dict[str, Any]]:
    """Loads the seed's teacher, or makes it: warm-up and GMM search (SPEC section 4),
    or label smoothing (paper 2; the teacher is then ``None`` and its rows are cached)."""
    return self._guarded(self._ensure_teacher)

  def _ensure_teacher(self) -> tuple[teacher_lib.FrozenTeacher | None, dict[str, Any]]:
    if self.teacher_info is not None:
      return self.teacher, self.teacher_info
    tdir = self.phase_dir("teacher")
    warm_fp = fingerprint(self.config, "warmup", self.config.warmup.alpha_kl)
    teacher_fp = fingerprint(self.config, "teacher", self.config.teacher.to_dict())
    # Every process must take the same branch below: look only after all arrived, and let
    # nobody write before all have looked.
    distributed.barrier("teacher-look")
    exists = teacher_lib.teacher_exists(tdir)
    distributed.barrier("teacher-looked")
    if exists:
      teacher, info = teacher_lib.load_teacher(tdir)
      check_compatible(info, {"fingerprint": teacher_fp}, f"the teacher in {tdir!r}")
    elif self.config.teacher.kind == "label_smoothed":
      d, eps = self.ctx.data, float(self.config.teacher.eps)
      k = self.ctx.num_classes
      train_t = teacher_lib.label_smoothed(d.y_train, k, eps)
      test_t = teacher_lib.label_smoothed(d.y_test, k, eps)
      info = {"fingerprint": teacher_fp, "seed": self.config.seed, "eps": eps,
              "stress_case": False, "selected_scores": teacher_lib.score_teacher(train_t)}
      if self.main:
        teacher_lib.save_label_teacher(tdir, train_t, test_t, info)
      distributed.barrier("teacher-saved")
      teacher, info = teacher_lib.load_teacher(tdir)
      self.log(f"teacher: label smoothing eps={eps}, K={k}, "
               f"I_T={info['selected_scores']['teacher_mi']:.4f}")
    else:
      self.run_warmup()
      with self.checkpointer("warmup") as ckpt:
        state, meta = self.restore(ckpt, self.ctx.num_classes, self.config.warmup.steps)
      check_compatible(meta, {"fingerprint": warm_fp}, "the warm-up checkpoint")
      encoder_params = state.params["encoder"]
      features = self._encoder_means(encoder_params, self.ctx.data.x_train)
      self.log(f"teacher: fitting {self._grid_size()} GMM candidates on "
               f"{features.shape[0]}x{features.shape[1]} warm-up means")
      search = teacher_lib.search_teacher(features, self.config.teacher)
      # Fitted on every host; process 0's fit is the one all use (and the one saved).
      gmm = distributed.broadcast(search.gmm)
      teacher = teacher_lib.FrozenTeacher(encoder_params=encoder_params, gmm=gmm)
      if self.main:
        teacher_fn = self._teacher_probs_fn()
        targets = self._map_batches(lambda xb: teacher_fn(teacher, xb), self.ctx.data.x_train)
        info = {"fingerprint": teacher_fp, "seed": self.config.seed,
                "warmup_step": self.config.warmup.steps, "stress_case": search.stress_case,
                "selected": search.selected, "candidates": search.candidates,
                "selected_scores": search.candidates[search.selected]["scores"]}
        teacher_lib.save_teacher(tdir, teacher, info, train_targets=targets)
      distributed.barrier("teacher-saved")
      teacher, info = teacher_lib.load_teacher(tdir)
      sel = info["candidates"][info["selected"]]
      self.log(f"teacher: selected K={sel['components']} {sel['covariance_type']} seed "
               f"{sel['seed']}, I_T={sel['scores']['teacher_mi']:.3f}"
               + (" (STRESS CASE: no feasible candidate)" if info["stress_case"] else ""))
    self.teacher, self.teacher_info = teacher, info
    return teacher, info

  def _grid_size(self) -> int:
    t = self.config.teacher
    return len(t.components) * len(t.covariance_types) * len(t.seeds)

  @property
  def num_classes(self) -> int:
    """K of the seed's teacher (loads or makes the teacher)."""
    return int(self.ensure_teacher()[1]["num_components"])

  def run_mode(self, mode: str, target: str = "live") -> dict[str, Any]:
    """Runs ``mode`` (after warm-up and teacher search when needed); returns its summary.

    Holds the workdir lock throughout: a second run on the same workdir is refused.
    """
    return self._guarded(lambda: self._run_mode(mode, target))

  def _run_mode(self, mode: str, target: str) -> dict[str, Any]:
    if mode not in MODES:
      raise ValueError(f"mode: unknown {mode!r}; expected one of {MODES}")
    if target not in TARGETS:
      raise ValueError(f"target: unknown {target!r}; expected one of {TARGETS}")
    if mode == "warmup":
      return self.run_warmup()
    if mode == "rescue":
      self._require_noalign(target)
    if mode == "rst_prefit" and self.config.model.head != "simplex":
      raise ValueError("mode: rst_prefit regresses the code onto the simplex witness's "
                       "analytic code; it needs --config.model.head=simplex")
    _, info = self.ensure_teacher()
    k = self.num_classes
    suffix = "" if target == "live" else "_fixed"
    meta = {"fingerprint": fingerprint(self.config, "variant", self.config.train.alpha_kl,
                                       self.config.train.lambda_bal,
                                       self.config.train.align_on_mean, self.config.train.init),
            "teacher_id": info["teacher_id"]}
    data_seed = _data_seed(self.config.seed, _VARIANT_CODE)
    weights = _phase_weights(self.config, mode)
    total = self.config.train.steps
    if mode == "rescue":
      init_fn, start = self._noalign_final(target, k, meta)
      total = start + self.config.train.steps
    elif mode == "rst_prefit":
      prefit = self._run_prefit(target, k, meta)
      init_fn = lambda: self._from_phase_final(prefit, k)  # noqa: E731
    else:
      init_fn = lambda: self._variant_init(k)  # noqa: E731
    phase = Phase(mode + suffix, mode, target, total, weights, data_seed,
                  dict(meta, lambda_ts=weights.lambda_ts))
    return self._run_phase(phase, k, init_fn, teacher_fn=self._teacher_probs_fn())

  def _run_prefit(self, target: str, k: int, meta: dict[str, Any]) -> str:
    """RST-prefit's regression phase (paper 2); returns its directory name."""
    phase = Phase("prefit" + ("" if target == "live" else "_fixed"), "prefit", target,
                  self.config.train.prefit_steps, losses.LossWeights(0.0, 0.0, 0.0),
                  _data_seed(self.config.seed, _PREFIT_CODE),
                  dict(meta, beta=float(self.config.model.witness_beta)))
    self._run_phase(phase, k, lambda: self._variant_init(k), self._teacher_probs_fn(),
                    step_name="prefit")
    return phase.name

  def _from_phase_final(self, name: str, k: int) -> TrainState:
    """A new run starting from the parameters of phase ``name``'s final checkpoint."""
    with self.checkpointer(name) as ckpt:
      done, _ = self.restore(ckpt, k)
    fresh = self.fresh_state(k, _VARIANT_CODE)
    return fresh.replace(params=done.params, opt_state=self.optimizer().init(done.params))

  def _require_noalign(self, target: str) -> None:
    name = "noalign" + ("" if target == "live" else "_fixed")
    ckdir = os.path.join(self.phase_dir(name), "checkpoints")
    if not os.path.isdir(ckdir) or not os.listdir(ckdir):
      raise ValueError(
          f"mode: rescue restarts from the final noalign checkpoint, but {ckdir!r} has none; "
          f"run --mode=noalign{' --target=fixed' if target == 'fixed' else ''} first")

  def _noalign_final(self, target: str, k: int, meta: dict[str, Any]):
    """The noalign run's final state (exact), and its step."""
    name = "noalign" + ("" if target == "live" else "_fixed")
    summary_path = os.path.join(self.phase_dir(name), "summary.json")
    if not os.path.isfile(summary_path):
      raise ValueError(f"mode: the noalign run in {self.phase_dir(name)!r} has not finished; "
                       "run --mode=noalign to completion first")
    with open(summary_path) as fh:
      final_step = int(json.load(fh)["step"])
    with self.checkpointer(name) as ckpt:
      if final_step not in ckpt.all_steps():
        raise ValueError(f"mode: the noalign checkpoint at its final step {final_step} is "
                         f"missing from {self.phase_dir(name)!r}")
      state, nmeta = self.restore(ckpt, k, final_step)
    check_compatible(nmeta, meta, f"the noalign checkpoint in {self.phase_dir(name)!r}")
    return (lambda: state), final_step

  def _variant_init(self, k: int) -> TrainState:
    state = self.fresh_state(k, _VARIANT_CODE)
    if self.config.train.init == "fresh":
      return state
    with self.checkpointer("warmup") as ckpt:
      warm, _ = self.restore(ckpt, self.ctx.num_classes, self.config.warmup.steps)
    params = _transfer(state.params, warm.params)
    return state.replace(params=params, opt_state=self.optimizer().init(params))

  # -- helpers --------------------------------------------------------------

  def _map_batches(self, fn: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    """``fn`` over ``x`` in evaluation-sized batches (scaled to [0, 1]), concatenated."""
    bs = self.config.eval.batch_size
    return np.concatenate([np.asarray(fn(data_lib.to_unit(x[i:i + bs])))
                           for i in range(0, len(x), bs)])

  def _encoder_means(self, encoder_params, x: np.ndarray) -> np.ndarray:
    fn = self.compiled("encode", self.ctx.num_classes)
    return self._map_batches(lambda xb: fn(encoder_params, xb), x)

  def _teacher_probs_fn(self):
    return self.compiled("teacher", self.ctx.num_classes)

  def _split_targets(self, teacher_fn, target: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher rows of the train and test splits, for evaluation (and fixed targets)."""
    d = self.ctx.data
    if teacher_fn is None:  # warm-up: no teacher yet; uniform rows
      return (np.full((len(d.x_train), k), 1.0 / k, np.float32),
              np.full((len(d.x_test), k), 1.0 / k, np.float32))
    tdir = self.phase_dir("teacher")
    if self.teacher is None:  # label-smoothed: the rows are the teacher
      return teacher_lib.load_train_targets(tdir), teacher_lib.load_test_targets(tdir)
    def live(x):
      return self._map_batches(lambda xb: teacher_fn(self.teacher, xb), x)

    train = teacher_lib.load_train_targets(tdir) if target == "fixed" else live(d.x_train)
    return train, live(d.x_test)

  def teacher_targets(self, target: str = "live") -> tuple[np.ndarray, np.ndarray]:
    """The teacher's rows on the train and test splits (making the teacher if needed)."""
    self.ensure_teacher()
    return self._split_targets(self._teacher_probs_fn(), target, self.num_classes)

  def _stepper(self, phase: Phase, step_fn, teacher_fn, t_train: np.ndarray, weights):
    """``advance(state, step) -> (state, metrics)``: one training step on the batch at ``step``.

    With ``data.on_device`` the training split (and fixed targets) is copied to every
    device once; each step sends only its indices, and the gather, the live teacher and
    the step run as one compiled call. Otherwise the host gathers and scales each batch
    and the live teacher runs as a call of its own. Both feed the same values.
    """
    x_train, cfg = self.ctx.data.x_train, self.config
    live = phase.target == "live" and teacher_fn is not None and self.teacher is not None
    teacher = (jax.device_put(jax.tree.map(np.asarray, self.teacher), self._replicated)
               if live else None)

    def indices(step: int) -> np.ndarray:
      return data_lib.batch_indices(phase.data_seed, step, len(x_train), cfg.train.batch_size)

    resident = x_train.nbytes + (0 if live else t_train.nbytes)
    on_device = cfg.data.on_device and fits_on_devices(resident, jax.local_devices())
    if cfg.data.on_device and not on_device:
      self.log(f"{phase.name}: the training split ({resident / 2**30:.2f} GiB) would take over "
               "half of a device's memory; batches are gathered on the host instead")
    if on_device:
      x_src = jax.device_put(x_train, self._replicated)
      t_src = None if live else jax.device_put(t_train, self._replicated)
      fused = self._fused_step(step_fn, teacher_fn if live else None)

      def advance_on_device(state, step):
        idx = distributed.global_batch(indices(step).astype(np.int32), self._batch_sharding)
        return fused(state, x_src, t_src, teacher, idx, weights)
      return advance_on_device

    def advance_from_host(state, step):
      idx = indices(step)
      x = distributed.global_batch(data_lib.to_unit(x_train[idx]), self._batch_sharding)
      t = (teacher_fn(teacher, x) if live
           else distributed.global_batch(t_train[idx], self._batch_sharding))
      return step_fn(state, {"x": x, "t": t}, weights)
    return advance_from_host

  def _fused_step(self, step_fn, teacher_fn):
    """``step_fn`` on rows gathered from device-resident data, in one jit (state donated);
    built once per step function and teacher, so that the phases share compilations."""
    key = ("fused", step_fn, teacher_fn)
    if key not in self._compiled:
      rows = functools.partial(jax.lax.with_sharding_constraint, shardings=self._batch_sharding)

      def fused(state, x_src, t_src, teacher, idx, weights):
        x = rows(data_lib.to_unit(x_src[idx]))
        t = teacher_fn(teacher, x) if teacher_fn is not None else rows(t_src[idx])
        return step_fn(state, {"x": x, "t": t}, weights)

      self._compiled[key] = jax.jit(fused, donate_argnums=0)
    return self._compiled[key]

  # -- the loop --------------------------------------------------------------

  def _run_phase(self, phase: Phase, k: int, init_fn, teacher_fn,
                 step_name: str = "step") -> dict[str, Any]:
    pdir = self.phase_dir(phase.name)
    os.makedirs(pdir, exist_ok=True)
    summary_path = os.path.join(pdir, "summary.json")
    metrics_path = os.path.join(pdir, "metrics.jsonl")
    meta = dict(phase.meta, phase=phase.name, data_seed=phase.data_seed)
    distributed.barrier(f"{phase.name}-start")  # all see the same files below

    with self.checkpointer(phase.name) as ckpt:
      if ckpt.latest_step() is not None:
        state, saved = self.restore(ckpt, k)
        check_compatible(saved, {key: meta[key] for key in phase.meta}, f"{pdir!r}")
        if self.main:
          _truncate_metrics(metrics_path, int(state.step))
        if int(state.step) < phase.total_steps:
          self.log(f"{phase.name}: resuming from step {int(state.step)}")
      else:
        state = init_fn()
        if self.main and os.path.exists(metrics_path):
          os.remove(metrics_path)
      if int(state.step) > phase.total_steps:
        raise ValueError(f"{phase.name}: the checkpoint is at step {int(state.step)}, beyond "
                         f"the requested {phase.total_steps} steps")
      if int(state.step) == phase.total_steps and os.path.isfile(summary_path):
        with open(summary_path) as fh:
          return json.load(fh)
      t_train, t_test = self._split_targets(teacher_fn, phase.target, k)
      eval_fn = self.compiled("eval", k)
      weights = jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), phase.weights)
      if step_name == "prefit" and (t_train <= 0).any():
        raise ValueError("mode: rst_prefit needs a teacher without zero entries (the analytic "
                         "code takes log T); use a smoothed teacher")
      advance = self._stepper(phase, self.compiled(step_name, k), teacher_fn, t_train, weights)
      state, timing = self._loop(phase, jax.device_put(state, self._replicated), advance,
                                 eval_fn, ckpt, meta, t_train, t_test, metrics_path)
      if ckpt.latest_step() != int(state.step):
        ckpt.save(int(state.step), state, meta)
    summary = self._final_summary(phase, state, eval_fn, t_train, t_test, pdir)
    summary["timing"] = timing
    if self.main:
      with open(metrics_path, "a") as fh:
        fh.write(json.dumps({"step": summary["step"], "mode": phase.mode,
                             "train": summary["train"], "test": summary["test"]}) + "\n")
      _write_json(summary_path, summary)
    distributed.barrier(f"{phase.name}-done")
    return summary

  def _loop(self, phase, state, advance, eval_fn, ckpt, meta, t_train, t_test, metrics_path):
    """Steps to ``phase.total_steps``; evaluates every ``eval.every`` (the final
    evaluation is the summary's) and checkpoints every ``train.checkpoint_every``.

    Returns:
      ``(state, timing)``, timing as in :func:`_timing`.
    """
    cfg = self.config
    start, clock = int(state.step), time.perf_counter()
    # (step, training time) at each host sync; training time leaves out evaluations and
    # saves, which start right after a sync (so no queued training step is billed to them).
    syncs: list[tuple[int, float]] = []
    side = {"eval": 0.0, "checkpoint": 0.0}
    bar = _progress(phase.name, int(state.step), phase.total_steps,
                    cfg.train.progress and self.main)
    pending: list[tuple[int, dict]] = []
    last_margin = float("nan")
    step_metrics = {"loss": float("nan")}
    for step in range(int(state.step), phase.total_steps):
      state, metrics = advance(state, step)
      pending.append((step, metrics))
      done = step + 1
      is_last = done == phase.total_steps
      saving = done % cfg.train.checkpoint_every == 0 or is_last
      evaluating = done % cfg.eval.every == 0 and not is_last
      if done % cfg.train.log_every == 0 or saving or evaluating:
        # Checked before every save and evaluation: nothing non-finite is written.
        step_metrics = _check_finite(pending, phase.name)
        pending.clear()
        syncs.append((done, time.perf_counter() - sum(side.values())))
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{step_metrics['loss']:.2f}", G_tau=f"{last_margin:+.3f}")
      if evaluating:
        tick = time.perf_counter()
        row = {"step": done, "mode": phase.mode, "train_step": step_metrics}
        for split, x, t in self._splits(t_train, t_test):
          row[split], _ = evaluate_split(eval_fn, state.params, x, t, cfg,
                                         jax.random.PRNGKey(_EVAL_SEED), self._batch_sharding)
        last_margin = row["train"]["margin"]
        if self.main:
          with open(metrics_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        bar.set_postfix(loss=f"{step_metrics['loss']:.2f}", G_tau=f"{last_margin:+.3f}")
        side["eval"] += time.perf_counter() - tick
      if saving:
        tick = time.perf_counter()
        ckpt.save(done, state, meta)
        side["checkpoint"] += time.perf_counter() - tick
    bar.close()
    return state, _timing(int(state.step) - start, time.perf_counter() - clock, syncs, side,
                          cfg.train.batch_size, self.ctx.mesh)

  def _splits(self, t_train, t_test):
    d = self.ctx.data
    return (("train", d.x_train, t_train), ("test", d.x_test, t_test))

  def _final_summary(self, phase, state, eval_fn, t_train, t_test, pdir) -> dict[str, Any]:
    d = self.ctx.data
    splits, arrays = {}, {}
    for split, x, t in self._splits(t_train, t_test):
      splits[split], arrays[split] = evaluate_split(
          eval_fn, state.params, x, t, self.config, jax.random.PRNGKey(_EVAL_SEED),
          self._batch_sharding)
    if d.y_train is not None and d.y_test is not None:
      train_acc, test_acc = diagnostics.linear_probe_accuracy(
          arrays["train"]["mu"], d.y_train, arrays["test"]["mu"], d.y_test)
      splits["train"]["probe_accuracy"], splits["test"]["probe_accuracy"] = train_acc, test_acc
    if self.main:
      np.savez(os.path.join(pdir, "predictions.npz"),
               **{f"{s}_{key}": arrays[s][key] for s in arrays
                  for key in ("teacher", "witness", "mu")})
    info = self.teacher_info or {}
    return {"mode": phase.mode, "target": phase.target, "step": int(state.step),
            "seed": int(self.config.seed), "dataset": d.name,
            "stress_case": bool(info.get("stress_case", False)),
            "teacher_id": info.get("teacher_id"),
            "weights": phase.weights._asdict(), "skipped_batches": int(state.skipped),
            "train": splits["train"], "test": splits["test"]}


# Evaluation uses its own fixed key: it never touches the training RNG stream. (A seed,
# not a key: nothing may run on a device at import, before jax.distributed.initialize.)
_EVAL_SEED = 12345


def _check_finite(pending: list[tuple[int, dict]], phase: str) -> dict[str, float]:
  """Fetches the pending step metrics; raises naming the first non-finite step.

  Returns:
    The last step's metrics as floats (loss terms, grad and param norms).
  """
  values = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, values):
    bad = sorted(k for k, v in m.items() if not np.isfinite(v))
    if bad:
      terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(m.items()))
      raise TrainingDiverged(
          f"{phase}: non-finite {', '.join(bad)} at step {step + 1} ({terms}); stopped, the "
          "last good checkpoint is kept. Lower train.learning_rate, check the data, or set "
          "train.skip_nonfinite=True to skip such batches.")
  return {k: float(v) for k, v in values[-1].items()}


def _timing(steps: int, seconds: float, syncs: list[tuple[int, float]],
            side: dict[str, float], batch_size: int, mesh: Mesh) -> dict[str, Any]:
  """The summary's ``timing``: this invocation's wall time and training throughput.

  ``seconds`` is the loop's wall time, of which ``eval_seconds`` and
  ``checkpoint_seconds`` went to evaluations and saves. ``steps_per_s`` is training
  alone, from the first to the last host sync (so without the first step's compilation);
  None when fewer than two syncs happened. ``peak_device_memory_bytes`` is the largest peak
  over this process's devices where the backend reports it (GPU, TPU), else None.
  """
  rate = None
  if len(syncs) >= 2 and syncs[-1][1] > syncs[0][1]:
    rate = (syncs[-1][0] - syncs[0][0]) / (syncs[-1][1] - syncs[0][1])
  peaks = [int(stats["peak_bytes_in_use"]) for stats in map(_memory_stats, jax.local_devices())
           if "peak_bytes_in_use" in stats]
  return {"steps": steps, "seconds": seconds, "eval_seconds": side["eval"],
          "checkpoint_seconds": side["checkpoint"], "steps_per_s": rate,
          "examples_per_s": None if rate is None else rate * batch_size,
          "platform": mesh.devices.flat[0].platform, "devices": int(mesh.size),
          "peak_device_memory_bytes": max(peaks) if peaks else None}


def fits_on_devices(nbytes: int, devices, fraction: float = 0.5) -> bool:
  """Whether ``nbytes`` take at most ``fraction`` of every device's memory.

  Backends that report no memory limit (the CPU) always fit: host memory holds the
  split already.
  """
  limits = [_memory_stats(device).get("bytes_limit") for device in devices]
  return all(limit is None or nbytes <= fraction * limit for limit in limits)


def _memory_stats(device) -> dict[str, Any]:
  """``device.memory_stats()``, or ``{}`` where the backend keeps none (the CPU)."""
  try:
    return device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # backends without memory stats
    return {}


def _transfer(fresh: Any, warm: Any) -> Any:
  """Fresh parameters with every leaf that also exists, same shape, in ``warm``."""
  warm_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(warm))
  out = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(fresh)).items():
    w = warm_flat.get(path)
    out[path] = w if w is not None and w.shape == value.shape else value
  return flax.traverse_util.unflatten_dict(out)


def _progress(name: str, start: int, total: int, enabled: bool):
  """A terminal progress bar (step, loss, live margin); silent when disabled or not a TTY."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=start, desc=name, dynamic_ncols=True, leave=False,
              disable=None if enabled else True)


def train(config: ml_collections.ConfigDict, mode: str, workdir: str, target: str = "live",
          log: Callable[[str], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
  """Runs one mode in ``workdir`` and returns its summary (the Python entry point).

  Runs warm-up and teacher search when the workdir lacks them and reuses them
  otherwise; resumes from the latest checkpoint; returns immediately with the
  summary of a finished run.

  Args:
    config: the run config (see ``configs/digits.py``).
    mode: one of :data:`MODES`.
    workdir: the seed's run directory.
    target: ``'live'`` or ``'fixed'`` teacher targets.
    log: progress messages (default: stderr).
    overwrite: clear a workdir made by an incompatible run instead of refusing it.

  Raises:
    ValueError: bad config or data, a workdir made by an incompatible run (without
      ``overwrite``), or a workdir locked by another run.
    TrainingDiverged: a non-finite loss (the last good checkpoint is kept).
  """
  return Runner(config, workdir, log, overwrite=overwrite).run_mode(mode, target)


def summary_line(split_metrics: dict[str, Any]) -> str:
  """The one-line certificate of a summary split, e.g. ``certified: G_tau=+0.62 (...)``."""
  fields = certificate.CertificateReport._fields
  return certificate.CertificateReport(**{f: split_metrics[f] for f in fields}).summary_line()
