"""DeepSeekMath figure 5 on the embedded task: what each method adds to SFT.

SFT (the shared warm start of each seed, no RL) is the baseline; RFT and DPO
learn from samples of that frozen SFT policy, online RFT, PPO and GRPO from
samples of the live policy. Every reward is the rule reward (the final
answer) or, for process GRPO, the ground-truth step labels the task provides.

Not included yet: the paper's learned outcome and process reward models.
ugrad can train and use them (`reward=model`, `reward=process` with
`reward_model` / `process_reward_model` workdirs), but no sweep step trains
them, so the rows that need them are left out rather than faked.

  python -m experiments.sweep --sweep=experiments/sweeps/figure5.py \
      --workdir=runs/figure5 --profile=quick
"""

from experiments import sweeps

METHODS = ("rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process")


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["runs"] = [{"name": m, "config": sweeps.config_path(m),
                    "overrides": {}} for m in METHODS]
  return sweep
