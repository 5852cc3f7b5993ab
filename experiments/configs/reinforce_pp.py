"""REINFORCE++: KL-shaped returns whitened over the batch, PPO clip."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "reinforce_pp"
  c.coef = _common.coef("reinforce_pp")
  return base.apply_variants(c, variant)
