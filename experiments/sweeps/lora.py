"""LoRA GRPO (rank 8 and rank 32) against full GRPO on the embedded task,
each at its own learning rate.

All three arms start from the same SFT warm start per seed and differ only
in what trains: every parameter (`grpo`), or rank-r adapters on the
attention and MLP projections with the base frozen and serving as the KL
reference (`lora_r8`, `lora_r32`; alpha 16, PEFT's scaling alpha / r). Each
arm's learning rate is chosen on seed 0 by final greedy accuracy on a
validation split (10% of the question space): full GRPO from
figure5_tuned's grid {3e-5, 1e-4, 3e-4}, the adapters from ten times that,
{3e-4, 1e-3, 3e-3} (adapters start at zero, B = 0, and usually want a
larger rate). The picks then run on the test seeds. Each run's
metrics.jsonl holds its step times; experiments/results/lora/README.md
adds the trained parameters and optimizer state per arm.

  python -m experiments.sweep --sweep=experiments/sweeps/lora.py \\
      --workdir=runs/lora --profile=quick
"""

from experiments import sweeps

FULL_LEARNING_RATES = [3e-5, 1e-4, 3e-4]
LORA_LEARNING_RATES = [3e-4, 1e-3, 3e-3]
RANKS = (8, 32)
VAL_FRACTION = 0.1


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["shared"]["task_kwargs.val_fraction"] = VAL_FRACTION
  grpo = sweeps.config_path("grpo")
  sweep["runs"] = [{"name": "grpo", "config": grpo, "overrides": {}}] + [
      {"name": f"lora_r{r}", "config": grpo, "overrides": {"lora.rank": r}}
      for r in RANKS
  ]
  grid = {"grpo": {"optim.lr": FULL_LEARNING_RATES}}
  grid.update({f"lora_r{r}": {"optim.lr": LORA_LEARNING_RATES} for r in RANKS})
  sweep["tune"] = {"seed": sweep["seeds"][0], "grid": grid}
  sweep["findings"] = [
      {"claim": f"LoRA rank {r} ~ full GRPO", "a": f"lora_r{r}", "b": "grpo"}
      for r in RANKS
  ]
  return sweep
