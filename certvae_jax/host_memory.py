"""Keep freed host memory in the process, so XLA:CPU's per-call buffers stop page-faulting.

XLA:CPU allocates each call's temporary buffer (about 100 MB for the 32x32 conv step) from
a fresh ``mmap`` that glibc unmaps on ``free``, so every call page-faults it in again.
:func:`retain_freed_memory` tells glibc to serve large requests from its main heap and keep
them; it changes where memory comes from, never a computed value. Off by default (it slows
the digits MLP step, and keeps the peak heap): ``CERTVAE_JAX_RETAIN_HOST_MEMORY=1`` turns it
on for the launch scripts. Measured costs and gains: the Speed and Design pages of the docs.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

ENV = "CERTVAE_JAX_RETAIN_HOST_MEMORY"
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: keep up to 2 GiB of free heap


def retain_from_env() -> bool:
  """:func:`retain_freed_memory` when ``CERTVAE_JAX_RETAIN_HOST_MEMORY=1``.

  Raises:
    ValueError: the variable is set to something other than 0 or 1.
  """
  value = os.environ.get(ENV, "0").strip() or "0"
  if value not in ("0", "1"):
    raise ValueError(f"{ENV}: expected 0 or 1, got {value!r}")
  return value == "1" and retain_freed_memory()


def retain_freed_memory() -> bool:
  """Sets glibc's allocator to reuse freed pages; returns whether it was applied.

  Does nothing (returns False) outside Linux with glibc (macOS, musl) or if glibc refuses
  a setting; never raises.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  # glibc only
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  mallopt.restype = ctypes.c_int
  # One arena: large blocks from the main heap, which grows with brk, not per-thread
  # heaps capped at 64 MiB that fall back to mmap. No mmap for large blocks, and a high
  # trim threshold so that free keeps the pages for the next call.
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
  return all(mallopt(param, value) == 1 for param, value in settings)
