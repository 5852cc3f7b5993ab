"""Helpers for config files."""

import ml_collections
from ml_collections import config_dict

from ugrad import coefficients


def coef(name: str, **overrides) -> ml_collections.ConfigDict:
  """The coefficient `name` with EVERY hyper-parameter listed, so each one
  can be overridden from the command line (--config.coef.beta=0.0).

  A `None` default (e.g. clip_eps_high = clip_eps) becomes a float
  placeholder: still None, but overridable with a number.
  """
  hparams = coefficients.default_hparams(name)
  hparams.update(overrides)
  hparams = {
      k: config_dict.placeholder(float) if v is None else v
      for k, v in hparams.items()
  }
  return ml_collections.ConfigDict(dict(name=name, **hparams))
