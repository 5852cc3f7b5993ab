"""A JAX profiler trace of chosen training steps, and where its time went.

`config.profile_steps = "START:STOP"` traces steps START..STOP-1 (0-based,
as the loop counts them) into WORKDIR/profile with `jax.profiler`; process 0
only. The trace opens in TensorBoard's profile plugin or Perfetto, and
`op_times` (the CLI `python -m experiments.perf.op_profile WORKDIR`) sums it per
jitted function and XLA operation: on the CPU each fusion, dot and copy of a
compiled function is one event per execution, so the table says which parts
of a step cost what. (On an accelerator, read the trace in TensorBoard.)
"""

import bisect
import collections
import dataclasses
import glob
import os
import re
from typing import Optional

import jax

from ugrad import errors
from ugrad.runtime import paths

PROFILE_DIR = "profile"
# Events of XLA's executor and thread pools that wrap the operations
# themselves; counting them too would count each operation twice.
_WRAPPERS = ("ThunkExecutor", "SlinkyThreadPool", "ThreadpoolListener")


def parse_steps(spec: str) -> Optional[tuple[int, int]]:
  """ "START:STOP" -> (START, STOP); "" -> None.

  Raises:
    ValueError: for anything but two ints with 0 <= START < STOP.
  """
  if not spec:
    return None
  match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", spec)
  if not match or int(match[1]) >= int(match[2]):
    raise errors.UserError(
        f"profile_steps must be 'START:STOP' with 0 <= START < "
        f"STOP (e.g. '10:20'), got {spec!r}"
    )
  return int(match[1]), int(match[2])


class StepProfiler:
  """Starts the trace before step START and stops it after step STOP-1."""

  def __init__(self, spec: str, workdir, enabled: bool = True):
    self.steps = parse_steps(spec) if enabled else None
    self.directory = str(paths.resolve(workdir) / PROFILE_DIR)
    self._tracing = False

  def before(self, step: int):
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.directory)
      self._tracing = True

  def after(self, step: int):
    """Call once the step's results are on the host (its work is done)."""
    if self._tracing and step + 1 >= self.steps[1]:
      self.close()

  def close(self):
    if self._tracing:
      self._tracing = False
      jax.profiler.stop_trace()


@dataclasses.dataclass(frozen=True)
class OpTime:
  function: str  # the jitted function it ran in (by dispatch order)
  name: str  # the operation's name in that function's compiled HLO
  total_s: float  # summed over executions and threads
  count: int


def latest_trace(directory: str) -> str:
  """The newest .xplane.pb under a profile directory.

  Raises:
    FileNotFoundError: when there is none.
  """
  found = sorted(
      glob.glob(
          os.path.join(directory, "plugins", "profile", "*", "*.xplane.pb")
      )
  )
  if not found:
    raise errors.MissingInput(
        f"no profiler trace (*.xplane.pb) under " f"{directory}/plugins/profile"
    )
  return found[-1]


def op_times(trace_path: str) -> list[OpTime]:
  """Time per XLA operation in a CPU trace, most expensive first.

  Each event of XLA's CPU worker threads is one execution of a fusion, dot,
  copy, ...; it is credited to the jitted function whose call (a
  `PjitFunction(name)` event of a Python thread) began last before it. The
  trainer waits for each phase's results, so that is the function it ran
  in; operation names repeat across functions, hence the pair.
  """
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel

  data = ProfileData.from_file(trace_path)
  calls, ops = [], []
  for plane in data.planes:
    for line in plane.lines:
      worker = "XLAEigen" in line.name
      for event in line.events:
        if worker and not event.name.startswith(_WRAPPERS):
          ops.append(event)
        elif not worker and event.name.startswith("PjitFunction("):
          calls.append((event.start_ns, event.name[len("PjitFunction(") : -1]))
  calls.sort()
  starts = [start for start, _ in calls]
  total, count = collections.Counter(), collections.Counter()
  for event in ops:
    i = bisect.bisect_right(starts, event.start_ns) - 1
    key = (calls[i][1] if i >= 0 else "?", event.name)
    total[key] += event.duration_ns
    count[key] += 1
  return [
      OpTime(function, name, ns / 1e9, count[function, name])
      for (function, name), ns in total.most_common()
  ]


def category(name: str) -> str:
  """A coarse kind of an XLA CPU operation by its name: matmul (a dot, or a
  YNNPACK / XNNPACK / oneDNN fusion built around one), reduction, copy or
  other fusion."""
  if name.startswith(
      (
          "dot",
          "ynn_fusion",
          "xnn_fusion",
          "onednn",
          "convolution",
          "custom-call",
      )
  ):
    return "matmul"
  if "reduce" in name:
    return "reduction"
  if name.startswith(("copy", "transpose")):
    return "copy"
  return "elementwise"
