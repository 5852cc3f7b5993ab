"""MetricsWriter: deterministic JSON lines, TensorBoard, exact resume."""

import glob
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from ugrad.runtime import metrics


def _read_events(logdir):
  """All TensorBoard events in `logdir`, file by file (TFRecord framing)."""
  events = []
  for name in sorted(glob.glob(os.path.join(logdir, "events.out.*"))):
    with open(name, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[pos + 12 : pos + 12 + length])
      events.append(event)
      pos += 12 + length + 4
  return events


def _scalars(events):
  return sorted(
      (e.step, v.tag, round(v.simple_value, 5))
      for e in events
      for v in e.summary.value
      if v.HasField("simple_value")
  )


def _run(workdir, steps, resume_step=None, close=True):
  """Logs what a trainer would for `steps`; the values depend on step only."""
  writer = metrics.MetricsWriter(workdir, resume_step=resume_step)
  for step in steps:
    writer.write(
        step,
        {
            "loss": jnp.float32(1.0 / step),
            "reward/mean": np.float64(step / 10),
            "tokens": step * 3,
        },
    )
    if step % 3 == 0:
      writer.write_text(step, "sample", f"12+{step}=\n#### {12 + step}")
  if close:
    writer.close()
  return writer


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_lines_are_deterministic_json(tmp_path):
  with metrics.MetricsWriter(tmp_path) as writer:
    writer.write(
        1, {"b": jnp.float32(0.5), "a": np.int32(2), "ok": True, "c": 0.25}
    )
    writer.write(1, {"eval/acc": jnp.asarray(0.75)})
  assert _read(tmp_path / metrics.METRICS_FILE) == (
      '{"step": 1, "a": 2, "b": 0.5, "c": 0.25, "ok": true}\n'
      '{"step": 1, "eval/acc": 0.75}\n'
  )
  assert metrics.read_metrics(tmp_path / metrics.METRICS_FILE) == [
      {"step": 1, "a": 2, "b": 0.5, "c": 0.25, "ok": True},
      {"step": 1, "eval/acc": 0.75},
  ]


def test_non_finite_values_round_trip(tmp_path):
  with metrics.MetricsWriter(tmp_path) as writer:
    writer.write(
        1, {"nan": jnp.float32(jnp.nan), "inf": math.inf, "neg": -np.inf}
    )
  assert '"nan": "NaN"' in _read(tmp_path / metrics.METRICS_FILE)
  (record,) = metrics.read_metrics(tmp_path / metrics.METRICS_FILE)
  assert math.isnan(record["nan"])
  assert record["inf"] == math.inf and record["neg"] == -math.inf


def test_bad_input_is_refused(tmp_path):
  with metrics.MetricsWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match="'vec' must be a real scalar"):
      writer.write(1, {"vec": jnp.zeros(3)})
    with pytest.raises(ValueError, match="'name' must be a real scalar"):
      writer.write(1, {"name": "grpo"})
    with pytest.raises(ValueError, match="key 'step'"):
      writer.write(1, {"step": 3})
    writer.write(5, {"x": 1.0})
    with pytest.raises(ValueError, match="step 4 is before step 5"):
      writer.write(4, {"x": 1.0})


def test_tensorboard_scalars_and_text(tmp_path):
  _run(tmp_path, range(1, 4))
  events = _read_events(tmp_path / metrics.TB_DIR)
  assert _scalars(events) == sorted(
      (s, tag, round(v, 5))
      for s in (1, 2, 3)
      for tag, v in (
          ("loss", 1 / s),
          ("reward/mean", s / 10),
          ("tokens", 3 * s),
      )
  )
  texts = [
      e.step
      for e in events
      for v in e.summary.value
      if v.tag.startswith("sample")
  ]
  assert texts == [3]


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
  whole, broken = tmp_path / "whole", tmp_path / "broken"
  _run(whole, range(1, 11))
  # The killed run got to step 8 and its last checkpoint was at step 5; it
  # died in the middle of writing a line.
  _run(broken, range(1, 9), close=False)
  with open(broken / metrics.METRICS_FILE, "a", encoding="utf-8") as f:
    f.write('{"step": 9, "lo')
  _run(broken, range(6, 11), resume_step=5)
  for name in (metrics.METRICS_FILE, metrics.SAMPLES_FILE):
    assert _read(broken / name) == _read(whole / name), name
  dropped = _read(broken / (metrics.METRICS_FILE + metrics.DROPPED_SUFFIX))
  assert [line[:11] for line in dropped.splitlines()] == [
      '{"step": 6,',
      '{"step": 7,',
      '{"step": 8,',
      '{"step": 9,',
  ]
  assert dropped.endswith('{"step": 9, "lo\n')
  # TensorBoard is told to hide the killed run's events after step 5.
  purges = [
      e.step
      for e in _read_events(broken / metrics.TB_DIR)
      if e.HasField("session_log")
  ]
  assert 6 in purges


def test_fresh_run_sets_earlier_lines_aside(tmp_path):
  _run(tmp_path, range(1, 4))
  _run(tmp_path, range(1, 3))
  assert [
      r["step"] for r in metrics.read_metrics(tmp_path / metrics.METRICS_FILE)
  ] == [1, 2]
  assert (
      len(
          metrics.read_metrics(
              str(tmp_path / metrics.METRICS_FILE) + metrics.DROPPED_SUFFIX
          )
      )
      == 3
  )


def test_corrupt_line_is_named(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 1, "x": 1}\n{"step": oops}\n{"step": 3}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
    metrics.MetricsWriter(tmp_path, resume_step=3)
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
    metrics.read_metrics(path)
