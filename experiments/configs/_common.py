"""Helpers for config files."""

import ml_collections

from ugrad import coefficients


def coef(name: str, **overrides) -> ml_collections.ConfigDict:
  """The coefficient `name` with EVERY hyper-parameter listed, so each one
  can be overridden from the command line (--config.coef.beta=0.0)."""
  hparams = coefficients.default_hparams(name)
  hparams.update(overrides)
  return ml_collections.ConfigDict(dict(name=name, **hparams))
