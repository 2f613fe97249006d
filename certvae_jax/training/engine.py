"""The compiled functions of one run, built once so that its phases share them.

:class:`Engine` holds the model, the optimizer, the objectives and their jitted train
and evaluation steps (keyed by objective and K), the state factories, and the two
ways of feeding batches to a step (:meth:`Engine.stepper`). Every mode that uses an
objective reuses its one compiled step: the weights are in the state.

The table of compiled functions is shared by every engine of the process built for
the same config (``config.seed`` aside: it is an argument of the one function that
reads it), example shape, devices and registered plug-ins, so a protocol's seeds and
phases trace and compile each function once.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from certvae_jax import (
  data as data_lib,
  distributed,
  objectives,
  plugins,
  teachers as teacher_lib,
)
from certvae_jax.evaluation import recon_check
from certvae_jax.models.vae import TeacherGuidedVAE, build_model, init_params
from certvae_jax.rng_streams import OBJECTIVE_PARAMS_CODE
from certvae_jax.training import extensions, step as step_lib
from certvae_jax.training.checkpoint import Checkpointer

_log = logging.getLogger(__name__)

# Tables of compiled functions by what they depend on (see ``_table``), least recently
# used first; a handful, as a process rarely alternates between more configs.
_TABLES: collections.OrderedDict[tuple[Any, ...], dict[tuple[Any, ...], Any]] = (
    collections.OrderedDict())
_MAX_TABLES = 8


def _table(config: ml_collections.ConfigDict, data: data_lib.Dataset, mesh: Mesh
           ) -> dict[tuple[Any, ...], Any]:
  """The table of compiled functions shared by engines that would build the same ones."""
  seedless = config.copy_and_resolve_references()
  seedless.seed = 0
  registered, held = plugins.snapshot()
  key = (seedless.to_json_best_effort(sort_keys=True), int(data.x_train.shape[1]),
         data.example_shape, mesh.axis_names, mesh.devices.shape,
         tuple(d.id for d in mesh.devices.flat), registered)
  if key not in _TABLES:
    _TABLES[key] = {("plug-ins",): held}
    while len(_TABLES) > _MAX_TABLES:
      _TABLES.popitem(last=False)
  _TABLES.move_to_end(key)
  return _TABLES[key]


class Engine:
  """Model, optimizer and compiled functions for one config, data set and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, data: data_lib.Dataset, mesh: Mesh):
    self.config, self.data, self.mesh = config, data, mesh
    self.input_dim = int(data.x_train.shape[1])
    self.replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P("data"))
    self._cache = _table(config, data, mesh)

  def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    if key not in self._cache:
      self._cache[key] = make()
    return self._cache[key]

  # -- model, optimizer, objectives ----------------------------------------------------

  def model(self, k: int) -> TeacherGuidedVAE:
    return self._cached(("model", k), lambda: build_model(
        self.config.model, self.input_dim, k, self.data.example_shape))

  def optimizer(self) -> optax.GradientTransformation:
    return self._cached(("tx",), lambda: optax.adam(self.config.train.learning_rate))

  def optimizer_state(self, params: Any) -> Any:
    """The optimizer's initial state for ``params``, as one compiled call (op by op, each
    parameter shape's zero moments would compile on their own)."""
    return self._cached(("tx_init",), lambda: jax.jit(self.optimizer().init))(params)

  def objective(self, name: str, k: int) -> objectives.Objective:
    """The registered objective ``name``."""
    return self._cached(("objective", name, k),
                        lambda: objectives.build(name, self.model(k), self.config))

  def train_step(self, name: str, k: int, schedule: step_lib.WeightSchedule | None = None,
                 plans: tuple[extensions.PhasePlan, ...] = ()):
    """The jitted step (state donated) of the objective as the phase's extension plans
    change it."""
    # A plan's objective depends on the run's config (fixed here) and on what it is.
    key = ("step", name, k, schedule, tuple((type(p), p.tag) for p in plans))
    return self._cached(key, lambda: step_lib.make_train_step(
        extensions.transform(self.objective(name, k), plans), self.optimizer(),
        bool(self.config.train.skip_nonfinite), schedule))

  def eval_step(self, name: str, k: int, plans: tuple[extensions.PhasePlan, ...] = ()):
    """The jitted evaluation step of the objective, as the plans that change its
    evaluation (:attr:`~certvae_jax.training.extensions.PhasePlan.changes_evaluation`)
    transform it."""
    plans = extensions.changing_evaluation(plans)
    key = ("eval", name, k, tuple((type(p), p.tag) for p in plans))
    return self._cached(key, lambda: step_lib.make_eval_step(
        extensions.transform(self.objective(name, k), plans), self.replicated))

  def encode(self, k: int):
    """Jitted ``(encoder_params, x) -> mu``."""
    model = self.model(k)
    return self._cached(("encode", k), lambda: jax.jit(
        lambda p, x: model.apply({"params": {"encoder": p}}, x,
                                 method=TeacherGuidedVAE.encode)[0]))

  def _encoder_apply(self, k: int):
    """``encoder_apply({'params': p}, x) -> (mu, logvar)``: the encoder alone."""
    model = self.model(k)

    def encoder_apply(variables, x):
      return model.apply({"params": {"encoder": variables["params"]}}, x,
                         method=TeacherGuidedVAE.encode)
    return encoder_apply

  def teacher_probs(self, k: int):
    """Jitted ``(teacher, x) -> T(x)``: the frozen GMM on the warm-up encoder's means."""
    encoder_apply = self._encoder_apply(k)
    return self._cached(("teacher", k), lambda: jax.jit(
        lambda teacher, x: teacher_lib.teacher_probs(encoder_apply, teacher, x)))

  def reconstruction_check(self, k: int, teacher: Any) -> recon_check.ReconstructionCheck:
    """The reconstruction-side probe (paper 1, appendix I) with ``teacher`` on the devices."""
    fn = self._cached(("recon_check", k), lambda: jax.jit(
        recon_check.per_example(self.model(k), self._encoder_apply(k)),
        out_shardings=self.replicated))
    return recon_check.ReconstructionCheck(
        fn, jax.device_put(jax.tree.map(np.asarray, teacher), self.replicated))

  # -- states --------------------------------------------------------------------------

  def fresh_state(self, k: int, data_code: int, weights: Mapping[str, float],
                  objective: str = "teacher_guided") -> step_lib.TrainState:
    """A new state: parameters from ``config.seed``, RNG stream ``data_code``; one jit.

    The model's parameters, plus ``params['objective']`` when the objective owns some
    (:attr:`certvae_jax.objectives.Objective.init_params`, e.g. a VQ codebook). The
    groups a phase's extension plans add come after (:meth:`with_plan_params`).
    """
    tx, model, input_dim = self.optimizer(), self.model(k), self.input_dim
    own = self.objective(objective, k).init_params

    def init(seed, code, w):
      params = init_params(model, jax.random.PRNGKey(seed), input_dim, k)
      if own is not None:
        params = dict(params, objective=own(jax.random.fold_in(jax.random.PRNGKey(seed),
                                                                OBJECTIVE_PARAMS_CODE)))
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), code)
      return step_lib.init_state(params, tx, rng, w)

    fn = self._cached(("init", k, own is not None and objective),
                      lambda: jax.jit(init, out_shardings=self.replicated))
    return fn(jnp.asarray(self.config.seed, jnp.int32), jnp.asarray(data_code, jnp.uint32),
              step_lib.as_weights(weights))

  def with_plan_params(self, state: step_lib.TrainState,
                       plans: tuple[extensions.PhasePlan, ...], k: int) -> step_lib.TrainState:
    """``state`` with the parameter groups the phase's plans add where it lacks them
    (a rescue restored from ``noalign``), replicated; see
    :func:`~certvae_jax.training.extensions.with_params`."""
    grown = extensions.with_params(state, plans, k, self.optimizer())
    return state if grown is state else jax.device_put(grown, self.replicated)

  def restore(self, ckpt: Checkpointer, k: int, weight_names, step: int | None = None,
              objective: str = "teacher_guided",
              plans: tuple[extensions.PhasePlan, ...] = ()):
    """``(state, meta)`` from ``ckpt``, replicated over the mesh; ``plans``: the phase
    that saved it had these extension plans (their parameter groups are restored too)."""
    template = jax.eval_shape(lambda: extensions.with_params(
        self.fresh_state(k, 0, dict.fromkeys(weight_names, 0.0), objective), plans, k,
        self.optimizer()))
    return ckpt.restore(template, step=step, sharding=self.replicated)

  def put_weights(self, weights: Mapping[str, Any]) -> dict[str, jax.Array]:
    return jax.device_put(step_lib.as_weights(weights), self.replicated)

  # -- feeding batches -----------------------------------------------------------------

  @staticmethod
  def _chunk(body, n: int, unroll: bool):
    """``(state, consts, xs) -> (state, metrics)``: ``body(state, consts, x)`` over the
    leading axis (length ``n``) of every leaf of ``xs``, as a ``lax.scan`` or unrolled;
    each step's metrics stacked."""

    def chunk(state, consts, xs):
      step = lambda st, x: body(st, consts, x)  # noqa: E731
      if not unroll:
        return jax.lax.scan(step, state, xs)
      per_step = []
      for i in range(n):
        state, metrics = step(state, jax.tree.map(lambda a, i=i: a[i], xs))
        per_step.append(metrics)
      return state, jax.tree.map(lambda *m: jnp.stack(m), *per_step)
    return chunk

  def fused_step(self, step_fn, teacher_fn, n: int = 1, unroll: bool = False):
    """``step_fn`` on rows gathered from device-resident data, in one jit (state donated).

    ``n > 1``: ``n`` steps in one call, over a ``(n, B)`` stack of indices (a
    ``lax.scan``, or unrolled), returning each step's metrics stacked. Built once per
    step function, teacher and ``n``, so that the phases share compilations.
    """

    def make():
      rows = functools.partial(jax.lax.with_sharding_constraint, shardings=self.batch_sharding)

      def one(state, x_src, t_src, teacher, idx):
        x = rows(data_lib.to_unit(x_src[idx]))
        t = teacher_fn(teacher, x) if teacher_fn is not None else rows(t_src[idx])
        return step_fn(state, {"x": x, "t": t})

      if n == 1:
        return jax.jit(one, donate_argnums=0)
      chunk = self._chunk(lambda st, consts, idx: one(st, *consts, idx), n, unroll)
      return jax.jit(lambda state, x_src, t_src, teacher, idx_stack: chunk(
          state, (x_src, t_src, teacher), idx_stack), donate_argnums=0)

    return self._cached(("fused", step_fn, teacher_fn, n, unroll and n > 1), make)

  def stacked_step(self, step_fn, teacher_fn, n: int, unroll: bool = False):
    """``n`` steps in one jit on a ``(n, B, ...)`` stack of host batches (state donated):
    the host-batch path's chunk, the targets given or from the live teacher."""

    def make():
      rows = functools.partial(jax.lax.with_sharding_constraint, shardings=self.batch_sharding)

      def one(state, teacher, xt):
        x, t = rows(xt[0]), xt[1]
        t = teacher_fn(teacher, x) if teacher_fn is not None else rows(t)
        return step_fn(state, {"x": x, "t": t})

      return jax.jit(self._chunk(one, n, unroll), donate_argnums=0)

    return self._cached(("stacked", step_fn, teacher_fn, n, unroll), make)

  def resident(self, x: np.ndarray) -> jax.Array:
    """``x`` replicated on every device for the whole phase; on a CPU the device array
    shares ``x``'s memory (the loaders align it: ``data.aligned_empty``), not a copy."""
    return jax.device_put(x, self.replicated, may_alias=True)

  def stepper(self, name: str, step_fn, data_seed: int, teacher: Any | None,
              t_train: np.ndarray | None, k: int, rows: np.ndarray | None = None
              ) -> Callable[[Any, int, int], Any]:
    """``advance(state, step, n) -> (state, metrics)``: training steps ``step .. step+n-1``.

    With ``teacher`` the targets are the live teacher's ``T(x)``; otherwise the rows of
    ``t_train``. With ``data.on_device`` the training split (and fixed targets) is
    copied to every device once; each call sends only its steps' indices, and the
    gather, the live teacher and ``n`` steps run as one compiled call (``metrics``
    stacked along a leading axis of length ``n`` when ``n > 1``). Otherwise the host
    gathers and scales the ``n`` batches of a call, sends them as one ``(n, B, ...)``
    stack, and the ``n`` steps run as one compiled call as well. Every path feeds the
    same values, step for step. ``rows``: train
    on these rows of the training split only (a guard set is held out).
    """
    x_train, cfg = self.data.x_train, self.config
    if rows is not None:
      x_train = data_lib.aligned(x_train, rows)
      t_train = None if t_train is None else t_train[rows]
    live = teacher is not None
    teacher_fn = self.teacher_probs(k) if live else None
    if live:
      teacher = jax.device_put(jax.tree.map(np.asarray, teacher), self.replicated)

    def indices(step: int) -> np.ndarray:
      return data_lib.batch_indices(data_seed, step, len(x_train), cfg.train.batch_size)

    stack_sharding = NamedSharding(self.mesh, P(None, "data"))  # (n, B, ...) over the batch
    resident = x_train.nbytes + (0 if live else t_train.nbytes)
    on_device = cfg.data.on_device and distributed.fits_on_devices(resident,
                                                                   jax.local_devices())
    if cfg.data.on_device and not on_device:
      _log.info("%s: the training split (%.2f GiB) would take over half of a device's "
                "memory; batches are gathered on the host instead", name, resident / 2**30)
    if on_device:
      x_src = self.resident(x_train)
      t_src = None if live else jax.device_put(t_train, self.replicated)
      unroll = bool(cfg.train.unroll_steps)

      def advance_on_device(state, step, n=1):
        fused = self.fused_step(step_fn, teacher_fn, n, unroll)
        if n == 1:
          idx = distributed.global_batch(indices(step).astype(np.int32), self.batch_sharding)
        else:
          idx = distributed.global_stack(
              np.stack([indices(s) for s in range(step, step + n)]).astype(np.int32),
              stack_sharding)
        return fused(state, x_src, t_src, teacher, idx)
      return advance_on_device

    def advance_from_host(state, step, n=1):
      if n == 1:
        idx = indices(step)
        x = distributed.global_batch(data_lib.to_unit(x_train[idx]), self.batch_sharding)
        t = (teacher_fn(teacher, x) if live
             else distributed.global_batch(t_train[idx], self.batch_sharding))
        return step_fn(state, {"x": x, "t": t})
      idx = np.stack([indices(s) for s in range(step, step + n)])
      x = distributed.global_stack(data_lib.to_unit(x_train[idx]), stack_sharding)
      t = None if live else distributed.global_stack(t_train[idx], stack_sharding)
      chunk = self.stacked_step(step_fn, teacher_fn, n, bool(cfg.train.unroll_steps))
      return chunk(state, teacher, (x, t))
    return advance_from_host


def transfer_params(fresh: Any, warm: Any) -> Any:
  """Fresh parameters with every leaf that also exists, same shape, in ``warm``."""
  warm_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(warm))
  out = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(fresh)).items():
    w = warm_flat.get(path)
    out[path] = w if w is not None and w.shape == value.shape else value
  return flax.traverse_util.unflatten_dict(out)
