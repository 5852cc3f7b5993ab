"""DeepSeekMath's section 5.2 comparisons that need learned rewards or
sampling, at 5 seeds: iterative vs fixed reward model, and maj@k vs pass@k.

`figure5_tuned` decides the rule-reward comparisons (online RFT vs RFT, GRPO
vs online RFT, PS vs OS) on 5 test seeds; this sweep adds, on the same task
split and the same SFT policies:

* "grpo": GRPO on the rule reward at figure5_tuned's pick (lr 3e-4, chosen
  on the validation split), the figure 7 row: after training it and the SFT
  policy draw 64 samples per held-out question for pass@k and maj@k.
* "orm", "grpo_orm", "grpo_orm_iterative": figure 6's outcome rows (an ORM
  on samples of the SFT policy; GRPO on it fixed, and iteratively: 3 x 50
  steps, the reward model continued 100 steps on fresh samples after each,
  10% replay), at GRPO's default lr like `figure6`.

Its shared settings equal figure5_tuned's (the validation split is held
out), so that sweep's SFT and GRPO runs are the same configs and may be
copied into this workdir instead of trained again.

  python -m experiments.sweep --sweep=experiments/sweeps/headline.py \\
      --workdir=runs/headline --profile=quick
"""

from experiments import sweeps
from experiments.sweeps import figure5_tuned
from experiments.sweeps import figure6
from experiments.sweeps import figure7

GRPO_LR = 3e-4  # figure5_tuned's pick for grpo (its tune.csv)


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["seeds"] = figure5_tuned.SEEDS[profile]
  sweep["shared"]["task_kwargs.val_fraction"] = figure5_tuned.VAL_FRACTION
  sweep["runs"] = [
      {
          "name": "grpo",
          "config": sweeps.config_path("grpo"),
          "overrides": {"optim.lr": GRPO_LR},
      }
  ]
  sweep["runs"] += figure6.reward_model_rows(
      "orm", "grpo", "model", "reward_model", figure6.ITERATIONS[profile]
  )
  sweep["evaluate"] = dict(figure7.EVALUATE[profile])
  sweep["findings"] = [
      {
          "claim": "iterative RL > fixed reward model (ORM)",
          "a": "grpo_orm_iterative",
          "b": "grpo_orm",
      },
      {"claim": "RL raises maj@64 more than pass@64", "a": "grpo", "k": 64},
      {"claim": "RL raises maj@16 more than pass@16", "a": "grpo", "k": 16},
  ]
  return sweep
