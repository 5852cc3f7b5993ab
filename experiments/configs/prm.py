"""Process reward model with Math-Shepherd labels (config.rm.label)."""

from experiments.configs import base
from experiments.configs import orm


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = orm.get_config()
  c.method = "prm"
  c.rm = orm.rm_settings("prm", label="hard")
  c.sampling.questions = 8
  return base.apply_variants(c, variant)
