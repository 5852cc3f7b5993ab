"""Online RFT: samples of the live policy, GC = 1[correct]."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "online_rft"
  c.source = "online"
  c.reward = "rule"
  c.coef = _common.coef("rft")
  return base.apply_variants(c, variant)
