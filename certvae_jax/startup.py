"""What a launch script does first, before it loads any library: SIGINT and SIGTERM stop
it with one line while JAX and the rest load (a traceback otherwise). Standard library
only, so that importing it is instant; :func:`certvae_jax.cli.run_guarded` takes over once
the script runs."""

import signal
import sys


def _stopped_while_loading(signum, frame) -> None:
  del frame
  print(f"error: stopped by {signal.Signals(signum).name} while starting; nothing was written",
        file=sys.stderr)
  sys.exit(128 + signum)


def stop_quietly_while_loading() -> None:
  """SIGINT and SIGTERM exit 130 / 143 with one line until the run installs its own."""
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, _stopped_while_loading)
