"""GRPO with outcome supervision: group-normalised rule rewards."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "grpo"
  c.source = "online"
  c.reward = "rule"
  c.coef = _common.coef("grpo")
  return base.apply_variants(c, variant)
