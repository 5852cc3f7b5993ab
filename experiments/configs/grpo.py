"""GRPO with outcome supervision: group-normalised rule rewards."""

from experiments.configs import _common
from experiments.configs import base


def get_config():
  c = base.get_config()
  c.method = "grpo"
  c.source = "online"
  c.reward = "rule"
  c.coef = _common.coef("grpo", supervision="outcome")
  return c
