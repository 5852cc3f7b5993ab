"""PPO: live samples, GAE advantages from a learned critic."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "ppo"
  c.source = "online"
  c.sampling.group_size = 1
  c.sampling.questions = 128
  c.reward = "rule"
  c.coef = _common.coef("ppo", beta=0.02)
  c.ppo_epochs = 2
  c.minibatches = 2
  return base.apply_variants(c, variant)
