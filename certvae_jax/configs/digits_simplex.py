"""Paper 2 on digits: the fixed simplex witness with a label-smoothed teacher.

    python launch/protocol.py --config=configs/digits_simplex.py            # VAE, RST-VAE, RST-prefit
    python launch/protocol.py --config=configs/digits_simplex.py --kl_stress=1,2,4,8
    python launch/train.py --mode=rst_prefit --config=configs/digits_simplex.py

The teacher is ``T = (1 - eps) e_y + eps / K`` (eps = 0.05, K = 10) on the digit labels;
the witness is ``s(mu) = softmax(beta W mu[:9])`` with beta = 5 (no trainable parameters);
models: ``vae`` (plain VAE scored by the same witness), ``full`` (RST-VAE: VAE + alignment of
the fixed witness) and ``rst_prefit`` (regress mu onto the analytic code, then RST-VAE). All
start from a fresh initialisation (no warm-up: the teacher does not need one). The analytic
code energy of this teacher is E* = 0.4469 for every input.
"""

import ml_collections

from certvae_jax.configs import digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Paper 2's setting on digits; ``arg='smoke'`` gives a seconds-long CPU run."""
  c = digits.get_config(arg)
  c.model.head = "simplex"
  c.model.witness_beta = 5.0
  c.teacher.kind = "label_smoothed"
  c.teacher.eps = 0.05
  c.train.init = "fresh"
  c.train.alpha_kl = 1.0
  c.train.lambda_ts = 1.0
  c.train.lambda_bal = 0.0
  c.protocol.variants = ("vae", "full", "rst_prefit")
  return c
