"""ORPO: the chosen response's NLL plus the odds-ratio preference term, on
DPO's data: (correct, incorrect) pairs of the frozen SFT policy."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "orpo"
  c.source = "frozen_policy"  # --config.source=online gives online orpo
  c.sampling.pairs = True
  c.reward = "rule"
  c.coef = _common.coef("orpo")
  return base.apply_variants(c, variant)
