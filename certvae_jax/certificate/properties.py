"""Teacher-relative property transfer (paper 1, Corollary 2): certify a coarser property.

Summing the columns of the teacher rows over a partition of the K components gives the
teacher of a coarser property (a cluster preference, a coarse partition), with its own
``I_T``. Summing the witness's columns over the same partition keeps it a z-only witness,
so Lemma 1 and Theorem 1 apply unchanged: :func:`certvae_jax.certificate.report` on the
coarsened rows certifies that this property passes through the code. A constant witness
stays constant under coarsening, so it is never certified at any level.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from certvae_jax.certificate.validation import Array, is_traced

__all__ = ["coarsen", "hierarchy", "partition_ids"]


def partition_ids(groups: Any, k: int) -> np.ndarray:
  """A partition of ``0..K-1`` as a length-K array of group ids ``0..G-1``.

  Args:
    groups: a length-K sequence of group ids (every id in ``0..G-1`` used), or a list of
      lists of component indices that covers each of ``0..K-1`` exactly once.
    k: the number of components K.

  Raises:
    ValueError: naming ``groups``, for anything that is not such a partition.
  """
  if isinstance(groups, (list, tuple)) and groups and all(
      isinstance(g, (list, tuple, np.ndarray)) for g in groups):
    members = [int(c) for g in groups for c in g]
    if sorted(members) != list(range(k)) or any(len(g) == 0 for g in groups):
      raise ValueError(f"groups: the lists must hold each component 0..{k - 1} exactly once, "
                       f"in non-empty groups; got {groups!r:.80}")
    ids = np.empty(k, np.int64)
    for gid, g in enumerate(groups):
      ids[list(g)] = gid
    return ids
  try:
    ids = np.asarray(groups)
  except (TypeError, ValueError) as e:
    raise ValueError(f"groups: expected group ids or lists of components, got "
                     f"{groups!r:.80}") from e
  if ids.shape != (k,) or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"groups: expected {k} integer group ids (one per component), got "
                     f"{groups!r:.80}")
  if ids.min() < 0 or set(ids.tolist()) != set(range(int(ids.max()) + 1)):
    raise ValueError(f"groups: the ids must be 0..G-1, each used; got {sorted(set(ids.tolist()))}")
  return ids.astype(np.int64)


def coarsen(probs: Array, groups: Any) -> Array:
  """Rows summed over a partition of their K columns: ``(N, K) -> (N, G)``.

  Args:
    probs: ``(N, K)`` probability rows (teacher or witness), NumPy or JAX; traced arrays
      work (the partition is static).
    groups: the partition (see :func:`partition_ids`).

  Returns:
    ``(N, G)`` rows, still on the simplex; column ``g`` is the probability of group ``g``.

  Raises:
    ValueError: ``probs`` not 2-D, or a bad partition (naming ``groups``).
  """
  shape = np.shape(probs)
  if len(shape) != 2:
    raise ValueError(f"probs: expected shape (N, K), got {shape}")
  ids = partition_ids(groups, shape[1])
  membership = np.eye(int(ids.max()) + 1, dtype=np.float32)[ids]  # (K, G)
  if is_traced(probs) or not isinstance(probs, np.ndarray):
    return jnp.matmul(jnp.asarray(probs), jnp.asarray(membership, jnp.asarray(probs).dtype),
                      precision="highest")
  return probs @ membership.astype(probs.dtype)


def hierarchy(means: Array, levels: Sequence[int] | None = None) -> dict[int, np.ndarray]:
  """Nested partitions of a GMM's K components from agglomerating their means (Ward):
  ``{G: group ids}`` for each ``G`` in ``levels`` (default: ``K-1`` down to 2).

  Raises:
    ValueError: fewer than 3 components, or a level outside ``2..K-1``.
  """
  from scipy.cluster.hierarchy import fcluster, linkage  # pylint: disable=import-outside-toplevel
  m = np.asarray(means, np.float64)
  k = m.shape[0]
  if m.ndim != 2 or k < 3:
    raise ValueError(f"means: expected (K >= 3, d) component means, got shape {m.shape}")
  levels = range(k - 1, 1, -1) if levels is None else levels
  tree = linkage(m, method="ward")
  out = {}
  for g in levels:
    if not 2 <= int(g) <= k - 1:
      raise ValueError(f"levels: each must be in 2..K-1 = 2..{k - 1}, got {g}")
    labels = fcluster(tree, t=int(g), criterion="maxclust") - 1
    _, ids = np.unique(labels, return_inverse=True)  # 0..G'-1 (ties may merge levels)
    out[int(ids.max()) + 1] = ids.astype(np.int64)
  return out
