"""GRPO with process supervision: one reward per step (true step labels)."""

from experiments.configs import _common
from experiments.configs import base


def get_config():
  c = base.get_config()
  c.method = "grpo_process"
  c.source = "online"
  c.reward = "ground_truth_process"
  c.coef = _common.coef("grpo", supervision="process")
  return c
