"""RLOO: leave-one-out baseline, token-sum aggregation."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "rloo"
  c.coef = _common.coef("rloo")
  return base.apply_variants(c, variant)
