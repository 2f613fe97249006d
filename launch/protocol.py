"""Runs paper 1's full / noalign / rescue protocol for several seeds and writes the tables.

    python launch/protocol.py                   # 3 seeds, configs/digits.py, runs/digits
    python launch/protocol.py --seeds=5 --target=fixed
    python launch/protocol.py --baselines --seeds=3                      # paper 1's table 3
    python launch/protocol.py --config=configs/digits.py:smoke --workdir=/tmp/p
    python launch/protocol.py --config=configs/digits_simplex.py          # paper 2's table
    python launch/protocol.py --config=configs/digits_simplex.py --kl_stress=1,2,4,8

Writes WORKDIR/protocol.json and WORKDIR/protocol.md (protocol_fixed.* for fixed
targets, protocol_guard_<policy>.* with --config.guard.policy); each seed's runs live in
WORKDIR/seed<s>/ and are resumed if present.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from certvae_jax import startup  # noqa: E402  (the standard library only)

startup.stop_quietly_while_loading()  # until cli.run_guarded takes over

from absl import flags  # noqa: E402

from certvae_jax import cli  # noqa: E402

flags.DEFINE_integer("seeds", 3, "Number of seeds (0 .. seeds-1), starting at --seed.")
flags.DEFINE_list("kl_stress", [], "Paper 2's KL-weight stress test: run RST-VAE (full) at "
                  "these alpha_KL values instead of the protocol, e.g. 1,2,4,8.")
flags.DEFINE_bool("baselines", False, "Run paper 1's baselines table instead of the protocol: "
                  "full, noalign and config.baselines.methods per seed, with raw and "
                  "post-hoc margins (baselines.json / .md).")
flags.DEFINE_bool("fresh", False, "Refuse seed workdirs that already hold runs instead of "
                  "reusing their finished runs.")
cli.define_common_flags()


def main() -> int:
  f, target = cli.setup(sys.argv, __doc__)
  if f.seeds < 1:
    cli.fail(f"--seeds: expected >= 1, got {f.seeds}")
  first = f.seed if f.seed is not None else 0
  root = f.workdir or os.path.join("runs", cli.run_name(f))
  from certvae_jax.experiments import protocol  # pylint: disable=import-outside-toplevel
  seeds = range(first, first + f.seeds)
  if f.kl_stress:
    try:
      alphas = [float(a) for a in f.kl_stress]
    except ValueError:
      cli.fail(f"--kl_stress: expected numbers such as 1,2,4,8, got {','.join(f.kl_stress)}")
    rows = protocol.run_kl_stress(f.config, os.path.join(root, "kl_stress"), seeds, alphas,
                                  overwrite=f.overwrite, fresh=f.fresh)
    stem = os.path.join(root, "kl_stress", "kl_stress")
  elif f.baselines:
    from certvae_jax.experiments import baselines  # pylint: disable=import-outside-toplevel
    rows = baselines.run_baselines(f.config, root, seeds, overwrite=f.overwrite, fresh=f.fresh)
    stem = os.path.join(root, "baselines")
  else:
    rows = protocol.run_protocol(f.config, root, seeds, target=target, overwrite=f.overwrite,
                                 fresh=f.fresh)
    stem = os.path.join(root, protocol.table_stem(f.config, target))
  name = "method" if f.baselines else "variant"
  with open(stem + ".md") as fh:
    print(fh.read())
  print(protocol.reuse_report(rows, name))
  print(f"tables: {stem}.json and {stem}.md")
  return 0


if __name__ == "__main__":
  cli.run_guarded(main)
