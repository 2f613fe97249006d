"""Validation at the public boundary: simplex rows, logits, scalars, config values.

Outside traced code every input is checked and a bad one raises ``ValueError`` naming
the argument and the row; inside ``jax.jit`` the values are not known at trace time,
so the checks are skipped.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # a jax.Array or np.ndarray

DEFAULT_ROW_ATOL = 1e-4


def is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def validate_simplex(
    name: str,
    probs: Array,
    *,
    atol: float = DEFAULT_ROW_ATOL,
    renormalize: bool = False,
) -> Array:
  """Checks that ``probs`` is an ``(N, K)`` array of probability rows.

  Args:
    name: the argument name, used in error messages.
    probs: array-like of shape ``(N, K)``.
    atol: allowed deviation of a row sum from 1.
    renormalize: divide each row by its sum instead of rejecting a row whose sum
      is off by more than ``atol`` (finite, non-negative rows with a positive sum
      only). Meant for tiny drift.

  Returns:
    ``probs`` unchanged (or renormalised), or untouched when traced under jit. Integer,
    boolean, float16 and bfloat16 rows come back as float32; half-precision rows are
    checked within ``max(atol, K * eps)`` of their dtype, then renormalised in float32.

  Raises:
    ValueError: naming ``name``, the offending row and the problem.
  """
  if is_traced(probs):
    return probs
  arr = np.asarray(probs)
  if arr.ndim != 2:
    raise ValueError(f"{name}: expected a 2-D array of shape (N, K), got shape {arr.shape}")
  n, k = arr.shape
  if n < 1:
    raise ValueError(f"{name}: needs at least one row (N >= 1), got shape {arr.shape}")
  if k < 2:
    raise ValueError(f"{name}: needs at least two classes (K >= 2), got shape {arr.shape}")
  converted = half = False
  if jnp.issubdtype(arr.dtype, jnp.floating) and arr.dtype.itemsize < 4:
    # float16 / bfloat16 rows: a softmax in them never sums to 1 within 1e-4. They are
    # cast up to float32 and checked at their own precision (K rounding errors at most).
    atol = max(atol, arr.shape[1] * float(jnp.finfo(arr.dtype).eps))
    arr, converted, half = arr.astype(np.float32), True, True
  elif not np.issubdtype(arr.dtype, np.floating):
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
      arr, converted = arr.astype(np.float32), True  # e.g. one-hot rows given as ints
    else:
      raise ValueError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
  finite = np.isfinite(arr)
  if not finite.all():
    row = int(np.argmin(finite.all(axis=1)))
    raise ValueError(f"{name}: row {row} has a non-finite entry (NaN or inf): {arr[row][:8]}")
  # Entries outside [0, 1] are what logits look like; say so.
  logits_hint = (" (did you pass logits? use from_logits=True)"
                 if (arr < 0).any() or (arr > 1).any() else "")
  if (arr < 0).any():
    row = int(np.argmin((arr >= 0).all(axis=1)))
    raise ValueError(f"{name}: row {row} has a negative entry (min {arr[row].min():.3g})"
                     f"{logits_hint}")
  sums = arr.sum(axis=1, dtype=np.float64)
  err = np.abs(sums - 1.0)
  worst = int(np.argmax(err))
  if err[worst] > atol:
    if renormalize and (sums > 0).all():
      return np.asarray(arr / sums[:, None], dtype=arr.dtype)  # float32 for half rows
    hint = logits_hint or ("" if renormalize else " (for small drift, renormalise first with "
                           "certificate.validate_simplex(name, rows, renormalize=True))")
    raise ValueError(
        f"{name}: rows must sum to 1 within {atol:g}; worst is row {worst} with sum "
        f"{sums[worst]:.6g}{hint}")
  if half:  # rows within their precision: renormalised in float32, so float32 checks pass
    return np.asarray(arr / sums[:, None], dtype=np.float32)
  return arr if converted else probs


def check_pair(teacher: Array, student: Array, student_name: str = "student") -> None:
  if is_traced(teacher) or is_traced(student):
    return
  ts, ss = np.shape(teacher), np.shape(student)
  if ts != ss:
    raise ValueError(f"teacher and {student_name} must have the same shape, got {ts} and {ss}")


def validate_pair(teacher: Array, student: Array, from_logits: bool = False
                  ) -> tuple[Array, Array]:
  """Validated ``(teacher, student)``: simplex rows, and the student as rows or logits."""
  teacher = validate_simplex("teacher", teacher)
  if from_logits:
    validate_logits("student_logits", student)
    _refuse_probabilities_as_logits(student)
  else:
    student = validate_simplex("student", student)
  check_pair(teacher, student, "student_logits" if from_logits else "student")
  return teacher, student


def _refuse_probabilities_as_logits(logits: Array) -> None:
  """Rows that are all non-negative and sum to 1, given as logits, are almost surely
  probabilities: their softmax would be a much flatter witness and a wrong margin."""
  if is_traced(logits):
    return
  arr = np.asarray(logits, np.float64)
  if (arr >= 0).all() and np.allclose(arr.sum(axis=1), 1.0, atol=1e-4):
    raise ValueError("student_logits: every row is non-negative and sums to 1: did you pass "
                     "probabilities? Pass from_logits=False for probability rows (the default)")


def validate_logits(name: str, logits: Array) -> None:
  if is_traced(logits):
    return
  arr = np.asarray(logits)
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
    raise ValueError(f"{name}: expected shape (N >= 1, K >= 2), got {arr.shape}")
  finite = np.isfinite(arr).all(axis=1)
  if not finite.all():
    raise ValueError(f"{name}: row {int(np.argmin(finite))} has a non-finite logit")


def check_scalar(name: str, value: Any, *, positive: bool = False) -> float:
  """A finite real scalar ``>= 0`` (``> 0`` if ``positive``), as a float.

  Raises:
    ValueError: naming ``name``, for anything else (strings, arrays, None, NaN, ...).
  """
  try:
    ok = np.shape(value) == () and not isinstance(value, (str, bytes, bool, np.bool_))
    number = float(value) if ok else None
  except (TypeError, ValueError):
    number = None
  if number is None:
    raise ValueError(f"{name}: expected a real number, got {value!r:.60}")
  if not np.isfinite(number) or number < 0 or (positive and number == 0):
    raise ValueError(f"{name}: expected a finite number {'> 0' if positive else '>= 0'}, "
                     f"got {number}")
  return number


def check_tau(tau: Any) -> None:
  if not is_traced(tau):
    check_scalar("tau", tau)


# ---------------------------------------------------------------------------
# Config-like values (each raises ValueError naming the field).
# ---------------------------------------------------------------------------


def is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
  if not is_int(value) or value < 1:
    raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def non_negative_int(name: str, value: Any) -> None:
  if not is_int(value) or value < 0:
    raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")


def non_negative(name: str, value: Any) -> None:
  if not is_number(value) or not math.isfinite(value) or value < 0:
    raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")


def positive(name: str, value: Any) -> None:
  if not is_number(value) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")


def finite(name: str, value: Any) -> None:
  if not is_number(value) or not math.isfinite(value):
    raise ValueError(f"{name}: expected a finite number, got {value!r}")


def boolean(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name}: expected True or False, got {value!r}")


def unit_interval(name: str, value: Any) -> None:
  if not is_number(value) or not 0.0 <= value <= 1.0:
    raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")


def open_unit_interval(name: str, value: Any) -> None:
  if not is_number(value) or not 0.0 < value < 1.0:
    raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")


def one_of(*choices: str) -> Callable[[str, Any], None]:
  def check(name: str, value: Any) -> None:
    if value not in choices:
      raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
  return check


def non_empty_tuple(element: Callable[[Any], bool], what: str) -> Callable[[str, Any], None]:
  def check(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or not value:
      raise ValueError(f"{name}: expected a non-empty tuple, got {value!r}")
    for item in value:
      if not element(item):
        raise ValueError(f"{name}: each entry must be {what}, got {item!r}")
  return check


def choices_tuple(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
  """A non-empty tuple whose every entry is one of ``choices``."""
  def check(name: str, value: Any) -> None:
    non_empty_tuple(lambda item: True, "")(name, value)
    for item in value:
      if item not in choices:
        raise ValueError(f"{name}: unknown {item!r}; expected entries from {choices}")
  return check
