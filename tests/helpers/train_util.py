"""Small, fast configs for trainer tests."""

import importlib

CONFIGS = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo", "grpo_process",
           "dr_grpo", "dapo", "rloo", "reinforce_pp", "gspo")


def tiny(name: str, steps: int = 2, init_from: str = ""):
  """The config `name` shrunk to seconds per step on a CPU."""
  c = importlib.import_module(f"experiments.configs.{name}").get_config()
  c.steps = steps
  c.model = "tiny"
  c.init_from = init_from
  c.batch_size = 16
  c.sampling.questions = 4
  c.sampling.group_size = 1 if name == "ppo" else 4
  c.sampling.pool_questions = 8
  c.sampling.max_new_tokens = 32
  c.checkpoint_every = 1
  c.sample_log_every = 1
  c.eval_questions = 8
  c.quiet = True
  c.warm_start.steps = 2
  c.warm_start.batch_size = 16
  return c
