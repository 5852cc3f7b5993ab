"""The methods of figure5 that can use step supervision, on the harder task.

`sweeps.HARD_TASK` (5 operands with multiplication, step-by-step solutions)
leaves the SFT policy at about 29% greedy, far below the ceiling, and makes
an outcome reward sparse while each step can still be checked: the profile
where process supervision (PS) and GRPO's advantages have room to differ
from outcome supervision (OS) and online RFT.

Rows: online RFT; GRPO with the outcome reward (OS); GRPO with the true
step labels (PS) and with a learned process reward model (PS, "prm" then
"grpo_prm"); PPO.

  python -m experiments.sweep --sweep=experiments/sweeps/hard_task.py \\
      --workdir=runs/hard_task --profile=quick
"""

from experiments import sweeps

METHODS = ("online_rft", "grpo", "grpo_process", "ppo")


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["shared"].update(sweeps.HARD_TASK)
  sweep["runs"] = [
      {"name": m, "config": sweeps.config_path(m), "overrides": {}}
      for m in METHODS
  ]
  sweep["runs"] += [
      {
          "name": "prm",
          "config": sweeps.config_path("prm"),
          "overrides": {"rm.label": "hard"},
      },
      {
          "name": "grpo_prm",
          "config": sweeps.config_path("grpo_process"),
          "overrides": {
              "reward": "process",
              "process_reward_model": "{run:prm}",
          },
      },
  ]
  sweep["findings"] = [
      {"claim": "GRPO > online RFT", "a": "grpo", "b": "online_rft"},
      {
          "claim": "GRPO+PS (true step labels) > GRPO+OS",
          "a": "grpo_process",
          "b": "grpo",
      },
      {
          "claim": "GRPO+PS (learned PRM) > GRPO+OS",
          "a": "grpo_prm",
          "b": "grpo",
      },
  ]
  return sweep
