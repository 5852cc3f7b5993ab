"""Small, fast configs for trainer tests: the `tiny` variant of a config."""

import importlib

CONFIGS = (
    "sft",
    "rft",
    "online_rft",
    "dpo",
    "ppo",
    "grpo",
    "grpo_process",
    "dr_grpo",
    "dapo",
    "rloo",
    "reinforce_pp",
    "gspo",
    "cispo",
    "simpo",
    "ipo",
    "cpo",
    "orpo",
    "kto",
)


def tiny(name: str, steps: int = 2, init_from: str = ""):
  """`experiments/configs/<name>.py:tiny` (seconds per step on a CPU, see
  `experiments.configs.base.tiny`) with `steps` and `init_from`."""
  module = importlib.import_module(f"experiments.configs.{name}")
  c = module.get_config("tiny")
  c.steps = steps
  c.init_from = init_from
  return c
