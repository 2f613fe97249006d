"""Paper 1's baselines as modes (section 4.3, table 3 and appendix C).

They keep the raw witness and its balance term but never align it (as ``noalign``), and
change only the KL:

================  ================================================================
``vanilla_vae``   ``alpha_KL = 1``
``beta_vae``      ``alpha_KL = baselines.beta``; phase ``beta_vae_<beta>``
``kl_anneal``     ``alpha_KL`` rises linearly from ``baselines.anneal_start`` to 1
                  over ``baselines.anneal_steps`` steps (0: half the run), then stays
``free_bits``     ``sum_d max(baselines.free_bits, KL_d)`` (Kingma et al. 2016)
``vq_vae``        VQ-VAE (van den Oord et al. 2017): the decoder and the head read the
                  nearest of ``baselines.vq_codes`` codes; no KL term
``gmvae``         a minimal GMVAE: ``baselines.gmvae_components`` Gaussian components,
                  marginalised exactly; the head reads the posterior mean of ``z``
================  ================================================================
"""

from __future__ import annotations

import jax.numpy as jnp

from certvae_jax.training.modes import Config, Mode, guided_weights, register
from certvae_jax.training.step import WeightSchedule


def anneal_steps(c: Config) -> int:
  """The KL-annealing ramp's length: ``baselines.anneal_steps``, or half the run."""
  return int(c.baselines.anneal_steps) or max(int(c.train.steps) // 2, 1)


def kl_anneal_schedule(c: Config) -> WeightSchedule:
  """``alpha_KL(t) = start + (1 - start) * min(1, t / ramp)``, times the base weight (1)."""
  start, ramp = float(c.baselines.anneal_start), anneal_steps(c)

  def schedule(weights, step):
    frac = jnp.minimum(step.astype(jnp.float32) / ramp, 1.0)
    return dict(weights, alpha_kl=weights["alpha_kl"] * (start + (1.0 - start) * frac))
  return schedule


_one = lambda c: 1.0  # noqa: E731
register(Mode("vanilla_vae", "teacher_guided", guided_weights(_one, align=False, balance=True)))
register(Mode("beta_vae", "teacher_guided",
              guided_weights(lambda c: c.baselines.beta, align=False, balance=True),
              tag=lambda c: f"{float(c.baselines.beta):g}"))
register(Mode("kl_anneal", "teacher_guided", guided_weights(_one, align=False, balance=True),
              schedule=kl_anneal_schedule,
              meta=lambda c: {"anneal_start": float(c.baselines.anneal_start),
                              "anneal_steps": anneal_steps(c)}))
register(Mode("free_bits", "free_bits", guided_weights(_one, align=False, balance=True),
              meta=lambda c: {"free_bits": float(c.baselines.free_bits)}))
register(Mode("vq_vae", "vq_vae",
              lambda c: {"lambda_ts": 0.0, "lambda_bal": float(c.train.lambda_bal)},
              meta=lambda c: {"vq_codes": int(c.baselines.vq_codes),
                              "vq_commitment": float(c.baselines.vq_commitment)}))

register(Mode("gmvae", "gmvae", guided_weights(_one, align=False, balance=True),
              meta=lambda c: {"gmvae_components": int(c.baselines.gmvae_components)}))
