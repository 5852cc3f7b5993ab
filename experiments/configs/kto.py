"""KTO: unpaired samples of the frozen SFT policy, desirable when the rule
reward says correct, each followed by a mismatched row (its prompt with
another question's completion) whose log-ratio estimates z_ref."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "kto"
  c.source = "frozen_policy"  # --config.source=online gives online KTO
  c.sampling.kto = True
  # Two samples per question: per step as many sampled completions as DPO
  # trains on (its 32 pairs), each followed by its mismatched row, 128 rows
  # (the base's 8 gave 512 rows, 6x DPO's update time on the 2-core CPU).
  c.sampling.group_size = 2
  c.reward = "rule"
  c.coef = _common.coef("kto")
  return base.apply_variants(c, variant)
