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

``:pca`` (``:pca_smoke``) swaps in paper 2's unsupervised teacher fitted on the data before
training: the training pixels projected to 8 principal axes, then the GMM search over K in
{8, 10, 12} and three covariance types (the search selects K = 12, full covariance, on
digits). Its rows are nearly hard assignments with exact zeros, so the analytic code (log T)
is undefined and the protocol runs ``vae`` and ``full`` only.
"""

import ml_collections

from certvae_jax.configs import digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Paper 2's setting on digits; ``arg='smoke'`` gives a seconds-long CPU run, ``'pca'``
  (``'pca_smoke'``) the input-PCA GMM teacher."""
  if arg not in (None, "", "smoke", "pca", "pca_smoke"):
    raise ValueError(f"config: unknown argument {arg!r}; expected nothing, 'smoke', 'pca' or "
                     "'pca_smoke'")
  pca = arg in ("pca", "pca_smoke")
  c = digits.get_config("smoke" if arg == "pca_smoke" else None if pca else arg)
  c.model.head = "simplex"
  c.model.witness_beta = 5.0
  c.teacher.kind = "label_smoothed"
  c.teacher.eps = 0.05
  c.train.init = "fresh"
  c.train.alpha_kl = 1.0
  c.train.lambda_ts = 1.0
  c.train.lambda_bal = 0.0
  c.protocol.variants = ("vae", "full", "rst_prefit", "rst_alpha_prefit", "escape")
  c.protocol.kl_stress_variants = ("vae", "full", "rst_alpha_prefit")
  if pca:
    c.teacher.kind = "gmm"
    c.teacher.features = "input_pca:8"
    c.teacher.components = (8, 10, 12)
    c.teacher.covariance_types = ("full", "diag", "spherical")
    c.teacher.seeds = (0,)
    c.protocol.variants = ("vae", "full", "escape")
    c.protocol.kl_stress_variants = ("vae", "full")
  return c
