"""Training metrics as JSON lines and TensorBoard scalars, exact across resume.

`workdir/metrics.jsonl` holds one line per `write`, `{"step": s, ...}` with the
other keys sorted, so two runs that log the same values write the same bytes.
Floats are plain JSON numbers; NaN and infinities, which JSON cannot hold, are
written as the strings "NaN", "Infinity" and "-Infinity" and turned back into
floats by `read_metrics`.

A run resumed from the checkpoint at step s first drops the lines with
step > s that the killed run logged after that checkpoint (they are appended
to `<file>.dropped`, not lost), so the resumed run's file equals that of an
uninterrupted run. TensorBoard gets the same treatment through its purge
step: events at steps > s written by the killed run are hidden.

TensorBoard's events are made on a thread of their own, in order, while the
next step computes (about 2 s of the main job's 1,400 steps); `flush` and
`close` wait for them and raise what they raised.
"""

from concurrent import futures
import json
import math
import os
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np

from ugrad import errors
from ugrad.runtime import paths

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
TB_DIR = "tb"
DROPPED_SUFFIX = ".dropped"
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class MetricsWriter:
  """Appends scalar metrics and sample texts to a workdir."""

  def __init__(self, workdir: str, resume_step: Optional[int] = None):
    """Opens the metric files, first dropping what a killed run logged late.

    Args:
      workdir: the run's directory; created if missing.
      resume_step: the step of the checkpoint this run resumed from; lines
        with a larger step are dropped. None starts a fresh run: every
        existing line is dropped (moved to `<file>.dropped`).
    """
    directory = paths.resolve(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    self.workdir = workdir
    self._last_step = -1 if resume_step is None else resume_step
    files = [directory / n for n in (METRICS_FILE, SAMPLES_FILE)]
    for path in files:
      truncate_jsonl(path, resume_step)
    self._metrics, self._samples = (
        p.open("a", encoding="utf-8") for p in files
    )
    # Imported here, not at the top: tensorboardX imports torch when it is
    # installed (2.4 s), which json_scalar and truncate_jsonl users such as
    # the gradient-log verifier do not need.
    import tensorboardX  # pylint: disable=import-outside-toplevel
    # TensorBoard hides events at steps >= purge_step from earlier runs.
    purge = 0 if resume_step is None else resume_step + 1
    self._tb = tensorboardX.SummaryWriter(
        str(directory / TB_DIR), purge_step=purge
    )
    self._tb_thread = futures.ThreadPoolExecutor(1, "tensorboard")
    self._tb_pending = []

  def write(self, step: int, metrics: Mapping[str, Any]):
    """Logs scalar metrics for `step`.

    Args:
      step: the number of updates done; never smaller than a step already
        written (several writes at one step are fine).
      metrics: name -> scalar (Python number, numpy or 0-d jax array).
    """
    self._check_step(step)
    if "step" in metrics:
      raise errors.UserError("metrics must not contain the key 'step'")
    values = {
        name: json_scalar(name, metrics[name]) for name in sorted(metrics)
    }
    self._append(self._metrics, step, values)
    self._to_tensorboard(self._add_scalars, values, step)

  def write_text(self, step: int, tag: str, text: str):
    """Logs a text (a sample completion) under `tag` for `step`."""
    self._check_step(step)
    if not isinstance(text, str):
      raise errors.UserError(
          f"text for {tag!r} must be a str, got " f"{type(text).__name__}"
      )
    self._append(self._samples, step, {"tag": tag, "text": text})
    self._to_tensorboard(self._tb.add_text, tag, text, step)

  def flush(self):
    for f in (self._metrics, self._samples):
      f.flush()
    self._wait_for_tensorboard()
    self._tb.flush()

  def close(self):
    self.flush()
    for f in (self._metrics, self._samples):
      f.close()
    self._tb_thread.shutdown()
    self._tb.close()

  def _add_scalars(self, values: Mapping[str, Any], step: int):
    for name, value in values.items():
      self._tb.add_scalar(name, _NON_FINITE.get(value, value), step)

  def _to_tensorboard(self, fn, *args):
    """Runs `fn(*args)` on the TensorBoard thread, after what is queued;
    raises what an earlier call raised."""
    self._tb_pending = [f for f in self._tb_pending if not _finished(f)]
    self._tb_pending.append(self._tb_thread.submit(fn, *args))

  def _wait_for_tensorboard(self):
    pending, self._tb_pending = self._tb_pending, []
    for f in pending:
      f.result()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _check_step(self, step):
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
      raise errors.UserError(f"step must be an int, got {step!r}")
    if step < self._last_step:
      raise errors.UserError(
          f"step {step} is before step {self._last_step}, "
          "which is already logged"
      )
    self._last_step = int(step)

  def _append(self, f, step, values):
    record = {"step": int(step), **values}
    f.write(json.dumps(record, allow_nan=False) + "\n")
    # A killed process must not leave the line in Python's buffer only.
    f.flush()


def _finished(future: futures.Future) -> bool:
  """Whether `future` is done; raises what it raised."""
  if not future.done():
    return False
  future.result()
  return True


def json_scalar(name: str, value: Any):
  """A scalar as a JSON value: bool, int, float or a non-finite marker.

  Args:
    name: the metric's name, for the error message.
    value: a Python, numpy or 0-d jax scalar.

  Returns:
    A bool, int or finite float, or "NaN" / "Infinity" / "-Infinity".
  """
  if isinstance(value, (bool, int, float)):
    item = value
  else:
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "biuf":
      raise errors.UserError(
          f"metric {name!r} must be a real scalar, got "
          f"{type(value).__name__} of shape {array.shape} and "
          f"dtype {array.dtype}"
      )
    item = array.item()
  if isinstance(item, float) and not math.isfinite(item):
    return (
        "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
    )
  return item


def read_metrics(path: paths.PathLike) -> list[dict]:
  """Reads a metrics JSON-lines file; non-finite markers become floats."""
  records = []
  with paths.resolve(path).open(encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise errors.UserError(
            f"{path}:{number}: not valid JSON ({e})"
        ) from None
      records.append(
          {
              k: _NON_FINITE.get(v, v) if isinstance(v, str) else v
              for k, v in record.items()
          }
      )
  return records


def truncate_jsonl(
    path: paths.PathLike, resume_step: Optional[int]
) -> list[str]:
  """Drops the lines of a JSON-lines log written after step `resume_step`.

  A last line cut short by a killed write is dropped too. Dropped lines are
  appended to `path + ".dropped"` with a warning, never deleted.

  Args:
    path: the log; a missing file counts as empty.
    resume_step: lines whose "step" is larger are dropped; None drops all.

  Returns:
    The kept lines, each ending in a newline, as they are now in the file.

  Raises:
    ValueError: a line other than the last is not JSON or has no int step.
  """
  path = paths.resolve(path)
  if not path.exists():
    return []
  with path.open(encoding="utf-8") as f:
    lines = f.readlines()
  kept, dropped = [], []
  for number, line in enumerate(lines, 1):
    step = _line_step(path, number, line, last=number == len(lines))
    if step is not None and resume_step is not None and step <= resume_step:
      kept.append(line)
    else:
      dropped.append(line if line.endswith("\n") else line + "\n")
  if dropped:
    dropped_file = path.with_name(path.name + DROPPED_SUFFIX)
    with dropped_file.open("a", encoding="utf-8") as f:
      f.writelines(dropped)
    _replace(path, kept)
    logging.warning(
        "%s: moved %d line(s) %s to %s",
        path,
        len(dropped),
        "of an earlier run"
        if resume_step is None
        else f"logged after step {resume_step}",
        dropped_file,
    )
  return kept


def _line_step(path, number, line, last):
  """The int step of one line; None for a cut-short last line."""
  try:
    step = json.loads(line)["step"] if line.endswith("\n") else None
  except (json.JSONDecodeError, TypeError, KeyError):
    step = None
  if isinstance(step, int) and not isinstance(step, bool):
    return step
  if last and not line.endswith("\n"):
    return None
  raise errors.UserError(
      f"{path}:{number}: not a JSON object with an int 'step': "
      f"{line[:80]!r}"
  )


def _replace(path, lines):
  """Rewrites `path` atomically: a crash leaves the old or the new file."""
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    f.writelines(lines)
    f.flush()
    if not paths.is_uri(path):  # Cloud objects appear whole on close.
      os.fsync(f.fileno())
  tmp.replace(path)
