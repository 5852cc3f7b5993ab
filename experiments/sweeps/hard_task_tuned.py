"""hard_task's rows, each at its own learning rate, at three seeds: the
sweep that decides DeepSeekMath section 5.2's open comparisons where the
embedded task is too easy to separate them.

Every method's learning rate is chosen from figure5_tuned's grid {3e-5,
1e-4, 3e-4} by final greedy accuracy on a validation split (10% of the
question space, disjoint from train and test) on seed 0; the picks then
run on the test seeds. The process reward model (`prm`, hard
Math-Shepherd labels) and process GRPO on its scores (`grpo_prm`: it needs
the seed's PRM, so the tuner cannot train it alone) keep their configs'
rates.

  python -m experiments.sweep --sweep=experiments/sweeps/hard_task_tuned.py \\
      --workdir=runs/hard_task_tuned --profile=quick
"""

from experiments.sweeps import figure5_tuned
from experiments.sweeps import hard_task

SEEDS = {"quick": [0, 1, 2], "full": [0, 1, 2, 3, 4]}
FINDINGS = [
    {"claim": "GRPO > online RFT", "a": "grpo", "b": "online_rft"},
    {
        "claim": "GRPO+PS (true step labels) > GRPO+OS",
        "a": "grpo_process",
        "b": "grpo",
    },
    {"claim": "GRPO+PS (learned PRM) > GRPO+OS", "a": "grpo_prm", "b": "grpo"},
    {"claim": "PPO > GRPO", "a": "ppo", "b": "grpo"},
]


def get_sweep(profile: str) -> dict:
  sweep = hard_task.get_sweep(profile)
  sweep["seeds"] = SEEDS[profile]
  sweep["shared"]["task_kwargs.val_fraction"] = figure5_tuned.VAL_FRACTION
  grid = {
      m: {"optim.lr": figure5_tuned.LEARNING_RATES} for m in hard_task.METHODS
  }
  sweep["tune"] = {"seed": sweep["seeds"][0], "grid": grid}
  sweep["findings"] = FINDINGS
  return sweep
