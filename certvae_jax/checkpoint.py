"""Orbax checkpoints holding everything a run needs to continue exactly.

A checkpoint at step ``t`` is a composite of

* ``state``: the train state pytree (parameters, optimizer state, step, RNG key);
* ``meta``: JSON run metadata: the phase, the data position (data seed and step:
  batches are a pure function of them, see :mod:`certvae_jax.data`), the
  fingerprint of the config that shapes the run, and the teacher artifact id.

Restoring refuses a checkpoint whose fingerprint or teacher differs from the run
asking for it. Orbax writes each step into a temporary directory and renames it
when complete, so an interrupted save never replaces the last good checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` for one phase."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves and waits until the step is committed on disk."""
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, template: Any, step: int | None = None,
              sharding: jax.sharding.Sharding | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores ``(state, meta)`` at ``step`` (default: the latest).

    Args:
      template: a pytree with the structure, shapes and dtypes of the state (arrays
        or ``jax.ShapeDtypeStruct``; values are ignored).
      step: the step to restore; default the latest.
      sharding: where every restored array goes (default: the first device).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"checkpoint: no checkpoint in {self.directory!r}")
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), template)
    out = self._manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def check_compatible(meta: dict[str, Any], expected: dict[str, Any], where: str) -> None:
  """Raises ``ValueError`` if any key of ``expected`` differs in ``meta``."""
  for key, want in expected.items():
    have = meta.get(key)
    if have != want:
      raise ValueError(
          f"checkpoint: {where} was made with a different {key} ({have!r}, this run has "
          f"{want!r}); use another --workdir or delete it")
