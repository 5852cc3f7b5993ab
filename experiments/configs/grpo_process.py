"""GRPO with process supervision: one reward per step (true step labels)."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "grpo_process"
  c.source = "online"
  c.reward = "ground_truth_process"
  c.coef = _common.coef("grpo_process")
  return base.apply_variants(c, variant)
