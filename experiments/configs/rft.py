"""RFT: samples of the frozen SFT policy, GC = 1[correct]."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "rft"
  c.source = "frozen_policy"
  c.reward = "rule"
  c.coef = _common.coef("rft")
  return base.apply_variants(c, variant)
