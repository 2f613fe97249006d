"""Trains one mode of paper 1's protocol and prints its certificate.

    python launch/train.py --mode=full
    python launch/train.py --mode=noalign --config=configs/digits.py:smoke
    python launch/train.py --mode=rescue --workdir=runs/digits/seed0
    python launch/train.py --mode=full --config.train.steps=4000 --seed=1 --target=fixed
    python launch/train.py --mode=full --config.data.source=npz:/path/to/data.npz

Modes: warmup (plain VAE; its means feed the teacher), full (every term on), noalign
(lambda_TS = 0: the collapse control), rescue (exact restart from noalign's final
checkpoint, alignment on), and paper 2's vae (plain VAE scored by the witness) and
rst_prefit (regress mu onto the simplex witness's analytic code, then RST-VAE) and
rst_alpha_prefit (the same onto alpha times that code; train.prefit_alpha), escape (RST-VAE
restarted exactly from the vae run's final checkpoint, with its margin and gradient norms), and
paper 1's baselines vanilla_vae, beta_vae, kl_anneal, free_bits, vq_vae and gmvae (the raw
head never aligned; settings in config.baselines).

Warm-up and teacher search run first when the workdir lacks them; a finished run
prints its summary again; an interrupted one resumes from its latest checkpoint.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from certvae_jax import startup  # noqa: E402  (the standard library only)

startup.stop_quietly_while_loading()  # until cli.run_guarded takes over

from absl import flags  # noqa: E402

from certvae_jax import cli  # noqa: E402
from certvae_jax.training import modes  # noqa: E402

flags.DEFINE_enum("mode", "full", list(modes.CLI_MODES),
                  "Training mode (vae, rst_prefit and rst_alpha_prefit are paper 2's; vanilla_vae ... gmvae are "
                  "paper 1's baselines).")
cli.define_common_flags()


def _finished_step(summary_path: str) -> int | None:
  """The step of a phase's summary already on disk, or None."""
  try:
    with open(summary_path) as fh:
      return int(json.load(fh)["step"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def main() -> int:
  f, target = cli.setup(sys.argv, __doc__)
  config = f.config
  if f.seed is not None:
    config.seed = f.seed
  workdir = f.workdir or os.path.join("runs", cli.run_name(f), f"seed{config.seed}")
  # pylint: disable-next=import-outside-toplevel
  from certvae_jax import distributed, train
  from certvae_jax.training.phase_loop import phase_name  # pylint: disable=import-outside-toplevel
  phase = phase_name(config, f.mode, target)
  before = _finished_step(os.path.join(workdir, phase, "summary.json"))
  summary = train.train(config, f.mode, workdir, target=target, overwrite=f.overwrite)
  if distributed.is_main():
    if before == summary["step"]:
      print(f"{phase}: already finished at step {before} in {os.path.join(workdir, phase)}; "
            "showing its summary (more steps continue it; delete the directory to train it "
            "again)", file=sys.stderr)
    print(f"{summary['mode']} ({summary['target']}) step {summary['step']}, seed "
          f"{summary['seed']}, {summary['dataset']}; summary: "
          f"{os.path.join(workdir, phase, 'summary.json')}")
    for split in ("train", "test"):
      print(f"{split}: {train.summary_line(summary[split])}")
    if summary.get("collapse") not in (None, "none"):
      t = summary["test"]
      print(f"collapse: {summary['collapse']} (a post-hoc linear head on the frozen code: test "
            f"G_tau={t['posthoc_margin']:+.2f}, {'' if t['posthoc_certified'] else 'not '}"
            "certified)")
    if "guard" in summary:
      g = summary["guard"]
      low = g["min_margin_after_certified"]
      print(f"guard ({g['policy']}): {g['interventions']} interventions ({g['raises']} raise, "
            f"{g['decays']} decay, {g['rollbacks']} rollback); lowest guard-set G_tau after it "
            f"first certified: {'-' if low is None else f'{low:+.3f}'}")
    if "used_head" in summary:
      u, t = summary["used_head"], summary["test"]
      print(f"used head ({u['kind']}): aligned through it for {u['active_steps']} steps; "
            f"test used G_tau={t['used_margin']:+.2f} (the certificate above reads the raw "
            "head)")
    if "rescue_diagnostics" in summary:
      d = summary["rescue_diagnostics"]
      print(f"rescue diagnostics at the start: alignment gradient norm "
            f"{d['align_grad_norm']:.3g}, logit response vs T(x) - Tbar correlation "
            f"{d['response_correlation']:+.3f}")
    if summary.get("hint"):
      print(f"hint: {summary['hint']}")
    if summary.get("stress_case"):
      print("note: teacher stress case (no candidate passed the QC thresholds); report apart")
  return 0


if __name__ == "__main__":
  cli.run_guarded(main)
