r"""GRPO's data with a method and a reward from this directory.

  python -m experiments.main --config=examples/custom_method/config.py \
      --workdir=runs/custom --config.init_from=runs/grpo/sft

Run from the repository root, where `examples` is importable like
`experiments`; `:tiny` after the path shrinks the run to seconds on a CPU.
get_config registers the method and the reward before naming them (once
per process, however often the file is loaded).
"""

from examples.custom_method import batch_baseline
from examples.custom_method import concise_reward
from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  batch_baseline.register()
  concise_reward.register()
  c = base.get_config()
  c.method = batch_baseline.NAME
  c.source = "online"
  c.reward = concise_reward.NAME
  c.coef = _common.coef(batch_baseline.NAME)
  return base.apply_variants(c, variant)
