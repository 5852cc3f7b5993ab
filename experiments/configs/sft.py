"""SFT: gold solutions, GC = 1."""

from experiments.configs import _common
from experiments.configs import base


def get_config():
  c = base.get_config()
  c.method = "sft"
  c.source = "dataset"
  c.reward = "none"
  c.coef = _common.coef("sft")
  c.steps = c.warm_start.steps
  c.optim.lr = c.warm_start.lr
  c.optim.warmup_steps = c.warm_start.warmup_steps
  c.batch_size = c.warm_start.batch_size
  return c
