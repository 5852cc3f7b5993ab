"""Process reward model with Math-Shepherd labels (config.rm.label)."""

from experiments.configs import orm


def get_config():
  c = orm.get_config()
  c.method = "prm"
  c.rm = orm.rm_settings("prm", label="hard")
  c.sampling.questions = 8
  return c
