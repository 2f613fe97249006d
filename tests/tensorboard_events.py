"""TensorBoard's view of a directory of event files, read without TensorBoard."""

import glob
import os
import struct

import pytest


def scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Per tag, the ``(step, value)`` points TensorBoard shows, in the order written.

  Files are read in name order and their events in file order (a TFRecord of ``Event``
  protos). An event holding a session START at step ``s`` drops the points read so far at
  steps ``>= s``: TensorBoard's purge of orphaned data (``EventAccumulator``, file version
  2). :class:`certvae_jax.training.writers.TensorBoardWriter` starts each file with one.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  start = event_pb2.SessionLog.START
  points: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == start:
        points = {tag: [p for p in pts if p[0] < event.step] for tag, pts in points.items()}
      for v in event.summary.value:
        points.setdefault(v.tag, []).append((event.step, v.simple_value))
  return points


def by_step(logdir: str) -> dict[tuple[int, str], float]:
  """:func:`scalars` by step and tag, checked to hold one point each."""
  out = {}
  for tag, points in scalars(logdir).items():
    for step, value in points:
      assert (step, tag) not in out, f"{tag} has two points at step {step}"
      out[(step, tag)] = value
  return out


def assert_same_as_metrics_jsonl(phase_dir: str) -> None:
  """TensorBoard shows the phase directory's ``metrics.jsonl``: the same scalars at the same
  steps, once each (a writer without event rows)."""
  from certvae_jax.training.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  expected = {(r["step"], k): v for r in read_jsonl(os.path.join(phase_dir, "metrics.jsonl"))
              for k, v in r.items() if k != "step"}
  shown = by_step(phase_dir)
  assert set(shown) == set(expected)
  for key, value in expected.items():
    assert shown[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
