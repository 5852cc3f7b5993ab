"""What each arm of the LoRA sweep trains and what its steps cost.

  python experiments/results/lora/costs.py SWEEP_DIR

For each run of the sweep (RUN/seed_N): the trained parameters (the
adapters of a LoRA run, else every parameter), the bytes of the trained
state in its newest checkpoint on disk (parameters or adapters with their
Adam moments), and the median seconds per step and per update phase over
its steps (metrics.jsonl: `step_time_s`, `time/update_s`). README.md
quotes it.
"""

import glob
import json
import os
import statistics
import sys

import jax

from ugrad.training import lora_config
from ugrad.training import runs


def trained_parameters(run_dir: str) -> int:
  """The number of trained parameters of a finished run."""
  config = runs.read_config(run_dir)
  if config.lora.rank:
    tree = runs.load_adapters(run_dir, lora_config.lora_spec(config))
  else:
    _, tree = runs.load_model(run_dir)
  return sum(x.size for x in jax.tree.leaves(tree))


def state_bytes(run_dir: str) -> int:
  """Bytes on disk of the train state in the newest checkpoint."""
  steps = sorted(
      int(d)
      for d in os.listdir(os.path.join(run_dir, "checkpoints"))
      if d.isdigit()
  )
  root = os.path.join(run_dir, "checkpoints", str(steps[-1]))
  return sum(
      os.path.getsize(os.path.join(d, f))
      for d, _, files in os.walk(root)
      for f in files
  )


def step_times(run_dir: str) -> tuple[float, float]:
  """Median seconds per step and per update phase."""
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return (
      statistics.median(r["step_time_s"] for r in rows),
      statistics.median(r["time/update_s"] for r in rows),
  )


def main(sweep_dir: str) -> None:
  print(
      "| run | seed | trained parameters | checkpoint MB | s/step | update s |"
  )
  print("|---|---|---|---|---|---|")
  for run_dir in sorted(glob.glob(os.path.join(sweep_dir, "*", "seed_*"))):
    if not runs.is_finished_model(run_dir):
      continue
    name, seed = run_dir.split(os.sep)[-2:]
    step, update = step_times(run_dir)
    print(
        f"| {name} | {seed.removeprefix('seed_')} | "
        f"{trained_parameters(run_dir):,} | {state_bytes(run_dir) / 1e6:.1f} |"
        f" {step:.3f} | {update:.3f} |"
    )


if __name__ == "__main__":
  main(sys.argv[1])
