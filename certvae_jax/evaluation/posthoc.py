"""The post-hoc head: where did the collapse happen, in the witness or in the code?

Paper 1 (section 4.3, table 3): freeze the encoder, fit a new linear z-only head
``softmax(mu W + b)`` on the training split's means against the teacher (a convex soft-label
logistic regression, solved with L-BFGS on standardised means), and certify it on test.
``collapse`` is ``none`` (raw witness certified), ``witness`` (only the post-hoc head is) or
``code`` (neither: evidence, not proof). The certificate page of the docs has the details.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from certvae_jax import certificate

DEFAULT_MAX_ITER = 500
DEFAULT_TOL = 1e-6


def _loss(params, x, t):
  """Cross-entropy of the head to the teacher rows: ``L_TS`` plus a constant."""
  log_s = jax.nn.log_softmax(x @ params["w"] + params["b"], axis=-1)
  return -jnp.mean(jnp.sum(jnp.where(t > 0, t * log_s, 0.0), axis=-1))


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _lbfgs(x, t, max_iter: int, tol: float):
  params = {"w": jnp.zeros((x.shape[1], t.shape[1]), x.dtype),
            "b": jnp.zeros((t.shape[1],), x.dtype)}
  fun = functools.partial(_loss, x=x, t=t)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(p, updates), state

  def running(carry):
    _, state = carry
    count = otu.tree_get(state, "count")
    grad = otu.tree_get(state, "grad")
    return (count == 0) | ((count < max_iter) & (otu.tree_norm(grad) >= tol))

  params, state = jax.lax.while_loop(running, step, (params, opt.init(params)))
  return params, otu.tree_get(state, "count")


class PosthocHead:
  """A linear z-only head ``softmax(standardise(mu) W + b)`` fitted by :func:`fit_head`."""

  def __init__(self, params: dict[str, Any], mean: np.ndarray, scale: np.ndarray,
               iterations: int):
    self.params, self.mean, self.scale, self.iterations = params, mean, scale, iterations

  def logits(self, mu: np.ndarray) -> jax.Array:
    return _linear_logits(self.params, self.mean, self.scale, jnp.asarray(mu, jnp.float32))


@jax.jit
def _linear_logits(params, mean, scale, mu):
  # One compiled call: op by op, each of its four operations compiles on its own per shape.
  return (mu - mean) / scale @ params["w"] + params["b"]


def fit_head(mu: np.ndarray, teacher: np.ndarray, max_iter: int = DEFAULT_MAX_ITER,
             tol: float = DEFAULT_TOL) -> PosthocHead:
  """The linear head minimising ``mean KL(T || softmax(mu W + b))`` on these rows.

  Args:
    mu: ``(N, d)`` encoder means (the frozen code).
    teacher: ``(N, K)`` teacher rows.
    max_iter: L-BFGS iterations at most.
    tol: stop when the gradient's norm is below this.
  """
  mu = np.asarray(mu, np.float32)
  mean = mu.mean(0)
  # A dimension that never varies is left as it is (its weight only shifts the bias).
  std = mu.std(0)
  scale = np.where(std > 0, std, 1.0).astype(np.float32)
  params, count = _lbfgs(jnp.asarray((mu - mean) / scale), jnp.asarray(teacher, jnp.float32),
                         int(max_iter), float(tol))
  return PosthocHead(params, mean, scale, int(count))


def posthoc_metrics(mu_train: np.ndarray, t_train: np.ndarray, splits: dict[str, tuple],
                    tau: float, max_iter: int = DEFAULT_MAX_ITER) -> dict[str, dict[str, Any]]:
  """The post-hoc head fitted on ``(mu_train, t_train)`` and certified on each split.

  Args:
    splits: ``{name: (mu, teacher rows)}``.

  Returns:
    ``{name: {posthoc_margin, posthoc_student_mi, posthoc_certified}}``, and the fit's
    ``posthoc_iterations`` in each.
  """
  head = fit_head(mu_train, t_train, max_iter)
  out = {}
  for name, (mu, t) in splits.items():
    rep = certificate.report(t, head.logits(mu), tau, from_logits=True)
    out[name] = {"posthoc_margin": rep.margin, "posthoc_student_mi": rep.student_mi,
                 "posthoc_certified": rep.certified, "posthoc_iterations": head.iterations}
  return out


def collapse(raw_test_certified: bool, posthoc_test_certified: bool) -> str:
  """``none``, ``witness`` or ``code``, from the test split (see the module docstring)."""
  if raw_test_certified:
    return "none"
  return "witness" if posthoc_test_certified else "code"
