"""DPO: (correct, incorrect) pairs of the frozen SFT policy."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "dpo"
  c.source = "frozen_policy"  # --config.source=online gives online DPO
  c.sampling.pairs = True
  c.reward = "rule"
  c.coef = _common.coef("dpo")
  return base.apply_variants(c, variant)
