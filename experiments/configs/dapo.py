"""DAPO: clip-higher, token normaliser, no KL, dynamic sampling."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "dapo"
  c.coef = _common.coef("dapo")
  c.sampling.dynamic = True
  return base.apply_variants(c, variant)
