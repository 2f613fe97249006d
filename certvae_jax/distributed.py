"""Multi-host helpers: one process per host, JAX's own distributed runtime.

Every process runs the same program (multi-controller JAX). The device mesh spans all
processes' devices; each process contributes only its rows of every global batch;
process 0 alone writes files (logs, metrics, summaries, the teacher artifact), and
barriers keep every process's view of the workdir the same. On one process each
helper reduces to its single-host meaning, so the same code runs everywhere.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """``jax.distributed.initialize`` (must run before anything touches a device).

  With no arguments JAX auto-detects the cluster where it can (TPU pods, SLURM, ...).

  Raises:
    ValueError: only some of the three arguments given, or inconsistent ones.
  """
  given = [a is not None for a in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ValueError("--coordinator_address, --num_processes and --process_id go together "
                     "(or give none of them to auto-detect the cluster)")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id: expected 0 <= id < {num_processes}, got {process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def is_main() -> bool:
  """Whether this is process 0, the one that writes files and logs."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def broadcast(tree: Any) -> Any:
  """Process 0's values of ``tree`` on every process (identity on one process)."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.broadcast_one_to_all(tree)


def global_batch(batch: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array sharded along rows, from the full batch known to every process.

  Each process hands over only its own contiguous block of rows (the rows its
  devices hold in the mesh), so no host materialises another host's part on device.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  n, i = jax.process_count(), jax.process_index()
  if len(batch) % n:
    raise ValueError(f"batch: {len(batch)} rows do not divide over {n} processes")
  per = len(batch) // n
  return jax.make_array_from_process_local_data(sharding, batch[i * per:(i + 1) * per],
                                                batch.shape)


def global_stack(stack: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """:func:`global_batch` for ``(n, B, ...)`` stacks of batches, sharded along axis 1."""
  if jax.process_count() == 1:
    return jax.device_put(stack, sharding)
  n, i = jax.process_count(), jax.process_index()
  if stack.shape[1] % n:
    raise ValueError(f"batch: {stack.shape[1]} rows do not divide over {n} processes")
  per = stack.shape[1] // n
  return jax.make_array_from_process_local_data(sharding, stack[:, i * per:(i + 1) * per],
                                                stack.shape)


def memory_stats(device) -> dict[str, Any]:
  """``device.memory_stats()``, or ``{}`` where the backend keeps none (the CPU)."""
  try:
    return device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # backends without memory stats
    return {}


def fits_on_devices(nbytes: int, devices, fraction: float = 0.5) -> bool:
  """Whether ``nbytes`` take at most ``fraction`` of every device's memory.

  Backends that report no memory limit (the CPU) always fit: host memory holds the
  split already.
  """
  limits = [memory_stats(device).get("bytes_limit") for device in devices]
  return all(limit is None or nbytes <= fraction * limit for limit in limits)
