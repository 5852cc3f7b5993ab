"""SimPO: length-normalised, reference-free preference pairs with a margin, on
DPO's data: (correct, incorrect) pairs of the frozen SFT policy."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "simpo"
  c.source = "frozen_policy"  # --config.source=online gives online simpo
  c.sampling.pairs = True
  c.reward = "rule"
  c.coef = _common.coef("simpo")
  return base.apply_variants(c, variant)
