"""Dr. GRPO: mean-centred group advantage, constant normaliser, no KL."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "dr_grpo"
  c.coef = _common.coef("dr_grpo")
  return base.apply_variants(c, variant)
