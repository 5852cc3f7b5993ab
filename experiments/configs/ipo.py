"""IPO: the squared loss on the log-ratio difference of preference pairs, on
DPO's data: (correct, incorrect) pairs of the frozen SFT policy."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "ipo"
  c.source = "frozen_policy"  # --config.source=online gives online ipo
  c.sampling.pairs = True
  c.reward = "rule"
  c.coef = _common.coef("ipo")
  return base.apply_variants(c, variant)
