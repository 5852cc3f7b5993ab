"""GSPO: sequence-level importance ratio, clipped per sequence."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "gspo"
  c.coef = _common.coef("gspo")
  return base.apply_variants(c, variant)
