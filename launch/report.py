"""Renders a protocol directory into a report: Markdown, PNG figures and one HTML page.

    python launch/protocol.py --seeds=3 && python launch/report.py runs/digits
    python launch/report.py runs/digits --target=fixed
    python launch/report.py runs/digits-simplex          # paper 2's runs and KL stress

Writes RUNDIR/report/report.md, report.html (images embedded) and the figures, from
whatever the directory holds (one or more seeds; missing parts are left out). Needs
matplotlib: pip install -e ".[report]".
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _interrupted(*_):
  print("error: interrupted (Ctrl-C); rerun to write the report", file=sys.stderr)
  sys.exit(130)


signal.signal(signal.SIGINT, _interrupted)

from certvae_jax.experiments import report_page  # noqa: E402  pylint: disable=wrong-import-position


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("rundir", help="a protocol directory, e.g. runs/digits")
  p.add_argument("--target", default="live", choices=("live", "fixed"))
  p.add_argument("--out", default=None, help="output directory (default RUNDIR/report)")
  a = p.parse_args()
  if not os.path.isdir(a.rundir):
    sys.exit(f"error: rundir: no such directory {a.rundir!r}")
  try:
    files = report_page.render(a.rundir, a.target, a.out)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  for name in sorted(files):
    print(files[name])


if __name__ == "__main__":
  main()
