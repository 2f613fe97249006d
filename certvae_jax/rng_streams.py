"""Every random stream of a run, in one table, so that no two parts share one.

A phase's batches and its step randomness come from ``data_seed(seed, code)`` (one
stream per code; the step folds in its own index, so a restart is exact). The other
streams are fixed numbers kept apart from every phase's codes.

==========================  =======================================================
``WARMUP_CODE`` = 0         the warm-up's batches and step keys
``VARIANT_CODE`` = 1        full, noalign, rescue (and every mode like them): one
                            stream, so variants differ only in weights and start
``PREFIT_CODE`` = 2         RST-prefit's code-regression stage (paper 2)
``OBJECTIVE_PARAMS_CODE``   ``fold_in(PRNGKey(seed), 1000)``: an objective's own
                            parameters (a VQ codebook)
``GUARD_STREAM`` = 7919     NumPy ``default_rng([seed, 7919])``: the guard set's rows
``EVAL_SEED`` = 12345       ``PRNGKey(12345)``: evaluation's sampled ``z`` and the
                            bootstrap (never the training stream)
==========================  =======================================================
"""

WARMUP_CODE, VARIANT_CODE, PREFIT_CODE = 0, 1, 2
OBJECTIVE_PARAMS_CODE = 1000
GUARD_STREAM = 7919
# A seed, not a key: nothing may run on a device at import, before
# jax.distributed.initialize.
EVAL_SEED = 12345


def data_seed(seed: int, code: int) -> int:
  """The data/RNG stream of a phase of stream ``code`` for run seed ``seed``."""
  return int(seed) * 16 + code
