r"""Where a profiled run's steps spent their time, per XLA operation.

  python -m experiments.main --config=experiments/configs/grpo.py \
      --workdir=W --config.profile_steps=20:30
  python -m experiments.perf.op_profile W [--top=25]

Reads the newest trace under W/profile (`ugrad.runtime.profiling`) and prints,
per
profiled step, the time of each kind of operation (matmul, elementwise,
reduction, copy) per jitted function, and of the most expensive operations,
summed over XLA's worker threads: on a 2-core CPU the wall time of a step
is at least half the sum. Names are those of the compiled HLO; `--xla_dump_to`
shows what a
fusion computes.
"""

import collections
import os

from absl import app
from absl import flags

from ugrad.runtime import profiling
from ugrad.training import runs

_TOP = flags.DEFINE_integer("top", 25, "operations listed")


def profiled_steps(workdir: str) -> int:
  """How many steps the trace holds: START:STOP, cut at the run's last step."""
  config = runs.read_config(workdir)
  start, stop = profiling.parse_steps(config.get("profile_steps", "")) or (0, 0)
  return max(min(stop, config.steps) - start, 1)


def table(ops: list[profiling.OpTime], steps: int, top: int) -> str:
  total = sum(op.total_s for op in ops)
  kinds = collections.Counter()
  for op in ops:
    kinds[op.function, profiling.category(op.name)] += op.total_s
  lines = [
      f"{steps} profiled step(s); {len(ops)} distinct operations, "
      f"{1e3 * total / steps:.1f} ms of operation time per step "
      "(summed over threads)",
      "",
      f"{'function':<24} {'kind':<12} {'ms/step':>9} {'share':>7}",
  ]
  for (function, kind), seconds in kinds.most_common():
    lines.append(
        f"{function[:24]:<24} {kind:<12} {1e3 * seconds / steps:9.2f} "
        f"{100 * seconds / total:6.1f}%"
    )
  lines += [
      "",
      f"{'function':<24} {'operation':<28} {'kind':<12} "
      f"{'ms/step':>9} {'runs/step':>9} {'us/run':>9}",
  ]
  for op in ops[:top]:
    lines.append(
        f"{op.function[:24]:<24} {op.name[:28]:<28} "
        f"{profiling.category(op.name):<12} "
        f"{1e3 * op.total_s / steps:9.2f} {op.count / steps:9.1f} "
        f"{1e6 * op.total_s / op.count:9.1f}"
    )
  return "\n".join(lines)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m experiments.perf.op_profile WORKDIR")
  workdir = argv[1]
  trace = profiling.latest_trace(os.path.join(workdir, profiling.PROFILE_DIR))
  print(trace)
  print(table(profiling.op_times(trace), profiled_steps(workdir), _TOP.value))


if __name__ == "__main__":
  app.run(main)
