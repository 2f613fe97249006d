"""TensorBoard's view of a directory of event files, read without TensorBoard."""

import glob
import os
import struct


def scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Per tag, the ``(step, value)`` points TensorBoard shows, in the order written.

  Files are read in name order and their events in file order (a TFRecord of ``Event``
  protos). An event holding a session START at step ``s`` drops the points read so far at
  steps ``>= s``: TensorBoard's purge of orphaned data (``EventAccumulator``, file version
  2), which ``SummaryWriter(purge_step=s)`` asks for.
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
