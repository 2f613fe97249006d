"""Runs paper 1's full / noalign / rescue protocol for several seeds and writes the tables.

    python launch/protocol.py                   # 3 seeds, configs/digits.py, runs/digits
    python launch/protocol.py --seeds=5 --target=fixed
    python launch/protocol.py --config=configs/digits.py:smoke --workdir=/tmp/p

Writes WORKDIR/protocol.json and WORKDIR/protocol.md (protocol_fixed.* for fixed
targets); each seed's runs live in WORKDIR/seed<s>/ and are resumed if present.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from certvae_jax import cli  # noqa: E402

flags.DEFINE_integer("seeds", 3, "Number of seeds (0 .. seeds-1), starting at --seed.")
cli.define_common_flags()


def main() -> int:
  f = cli.parse(sys.argv)
  cli.enable_compilation_cache()
  if f.seeds < 1:
    cli.fail(f"--seeds: expected >= 1, got {f.seeds}")
  first = f.seed if f.seed is not None else 0
  root = f.workdir or os.path.join("runs", cli.dataset_tag(f.config.data.source))
  from certvae_jax import protocol  # pylint: disable=import-outside-toplevel
  protocol.run_protocol(f.config, root, range(first, first + f.seeds), target=f.target)
  suffix = "" if f.target == "live" else "_fixed"
  with open(os.path.join(root, f"protocol{suffix}.md")) as fh:
    print(fh.read())
  print(f"tables: {os.path.join(root, f'protocol{suffix}.json')} and .md")
  return 0


if __name__ == "__main__":
  cli.run_guarded(main)
