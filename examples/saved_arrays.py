"""Certify a model trained anywhere (PyTorch, TensorFlow, ...) from saved arrays.

    python examples/saved_arrays.py --witness witness_logits.npy --teacher teacher.npy
    python examples/saved_arrays.py --demo DIR   # writes two example .npy files, certifies them

The certificate needs only two arrays over the same evaluation inputs, row for row:
the raw z-only witness at the encoder mean (logits, or probabilities with
``--probabilities``) and the teacher's rows ``T(x)`` on the simplex (paper 1, section
2.3). The files are read in chunks through a memory map, so they may be larger than
memory.
"""

import argparse
import os

import numpy as np
from scipy.special import softmax

from certvae_jax import certificate


def chunks(witness: np.ndarray, teacher: np.ndarray, size: int = 65536):
  for start in range(0, len(teacher), size):
    yield start, witness[start:start + size], teacher[start:start + size]


def certify_files(witness_path: str, teacher_path: str, tau: float, probabilities: bool):
  witness = np.load(witness_path, mmap_mode="r")
  teacher = np.load(teacher_path, mmap_mode="r")
  if witness.shape != teacher.shape:
    raise SystemExit(f"error: witness {witness.shape} and teacher {teacher.shape} differ in shape")
  stats = certificate.CertificateStats.zeros(teacher.shape[1])
  for _, s, t in chunks(witness, teacher):
    stats = stats.update(np.asarray(t), np.asarray(s), from_logits=not probabilities)
  return stats.finalize(tau)


def write_demo(directory: str) -> tuple[str, str]:
  """A witness that tracks a 5-class teacher, saved the way another framework would."""
  rng = np.random.default_rng(0)
  logits_t = rng.normal(size=(5000, 5)) * 3
  teacher = softmax(logits_t, axis=1).astype(np.float32)
  witness = (0.8 * logits_t + rng.normal(size=logits_t.shape)).astype(np.float32)
  os.makedirs(directory, exist_ok=True)
  paths = os.path.join(directory, "witness_logits.npy"), os.path.join(directory, "teacher.npy")
  np.save(paths[0], witness)
  np.save(paths[1], teacher)
  return paths


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--witness", help=".npy of witness logits (N, K)")
  p.add_argument("--teacher", help=".npy of teacher rows (N, K)")
  p.add_argument("--probabilities", action="store_true", help="the witness file holds rows")
  p.add_argument("--tau", type=float, default=certificate.DEFAULT_TAU)
  p.add_argument("--demo", metavar="DIR", help="write two example files to DIR and use them")
  a = p.parse_args()
  if a.demo:
    a.witness, a.teacher = write_demo(a.demo)
  if not (a.witness and a.teacher):
    p.error("give --witness and --teacher, or --demo DIR")
  try:
    rep = certify_files(a.witness, a.teacher, a.tau, a.probabilities)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from e
  print(f"{rep.n} rows, K={rep.k}: {rep.summary_line()}")


if __name__ == "__main__":
  main()
