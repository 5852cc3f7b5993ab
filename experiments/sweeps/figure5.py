"""DeepSeekMath figure 5 on the embedded task: what each method adds to SFT.

SFT (the shared warm start of each seed, no RL) is the baseline; RFT and DPO
learn from samples of that frozen SFT policy, online RFT, PPO and GRPO from
samples of the live policy, with the rule reward (the final answer) or, for
process GRPO, the ground-truth step labels the task provides.

The paper's learned-reward rows follow: an outcome reward model ("orm",
trained on samples of the seed's SFT policy, labels = the rule reward) and
GRPO with its scores as the reward ("grpo_orm"); a process reward model with
hard Math-Shepherd labels ("prm": a step is good when some completion of its
prefix by the SFT policy reaches the gold answer) and process GRPO with its
step scores ("grpo_prm"). They come last, so a workdir of the rule-reward
rows is reused and only they train. The report lists the reward models'
held-out accuracy and AUC in its own table.

  python -m experiments.sweep --sweep=experiments/sweeps/figure5.py \
      --workdir=runs/figure5 --profile=quick
"""

from experiments import sweeps

METHODS = ("rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process")

# The learned-reward rows, quick profile ("rm": 200 steps for each reward
# model; the GRPO runs take "rl", 150 steps). Measured on the 2-core CPU by
# training only these rows in a copy of a finished quick figure5 workdir
# (the workdir is reused, only they train; python -m experiments.sweep
# --sweep=experiments/sweeps/figure5.py --workdir=<the copy> --profile=quick):
# orm 65 / 45 s, grpo_orm 111 / 106 s, prm 91 / 89 s, grpo_prm 104 / 99 s
# for seeds 1 / 2 (seed 0, while a test run shared the cores: 71, 200, 103,
# 107 s); 1,191 s, about 20 minutes, for the 3 seeds.
LEARNED_REWARDS = (
    ("orm", "orm", {}),
    ("grpo_orm", "grpo", {"reward": "model", "reward_model": "{run:orm}"}),
    ("prm", "prm", {"rm.label": "hard"}),
    (
        "grpo_prm",
        "grpo_process",
        {"reward": "process", "process_reward_model": "{run:prm}"},
    ),
)


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["runs"] = [
      {"name": m, "config": sweeps.config_path(m), "overrides": {}}
      for m in METHODS
  ]
  sweep["runs"] += [
      {
          "name": name,
          "config": sweeps.config_path(config),
          "overrides": overrides,
      }
      for name, config, overrides in LEARNED_REWARDS
  ]
  return sweep
