"""The examples in examples/ run (smoke sizes) and print a certificate."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"(not )?certified: G_tau=[+-]\d+\.\d\d \(I_T=\d+\.\d\d, L_TS=\d+\.\d\d")


def run_example(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("script", ["nnx_vae.py", "plain_jax.py"])
def test_own_model_examples_certify_their_held_out_split(script):
  r = run_example(os.path.join("examples", script), "--smoke")
  assert r.returncode == 0, r.stderr[-2000:]
  last = r.stdout.strip().splitlines()[-1]
  assert last.startswith("test: ") and LINE.search(last), r.stdout


def test_saved_arrays_example_certifies_files_and_refuses_mismatched_ones(tmp_path):
  r = run_example(os.path.join("examples", "saved_arrays.py"), "--demo", str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "5000 rows, K=5: certified: G_tau=+0.68" in r.stdout
  r = run_example(os.path.join("examples", "saved_arrays.py"), "--witness",
                  str(tmp_path / "witness_logits.npy"), "--teacher",
                  str(tmp_path / "teacher.npy"), "--probabilities")
  assert r.returncode == 1 and "did you pass logits" in r.stderr
