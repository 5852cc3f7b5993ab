"""CISPO: GRPO's group advantage with a clipped, stopped importance weight
(every token keeps its gradient), token normaliser."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "cispo"
  c.coef = _common.coef("cispo")
  return base.apply_variants(c, variant)
