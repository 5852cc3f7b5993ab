r"""GRPO's online data trained with W-REINFORCE from this directory.

  python -m experiments.main --config=examples/weighted_reinforce/config.py \
      --workdir=runs/w_reinforce --config.init_from=runs/grpo/sft

Run from the repository root; `:tiny` after the path shrinks the run to
seconds on a CPU.
"""

from examples.weighted_reinforce import w_reinforce
from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  w_reinforce.register()
  c = base.get_config()
  c.method = w_reinforce.NAME
  c.source = "online"
  c.reward = "rule"
  c.coef = _common.coef(w_reinforce.NAME)
  return base.apply_variants(c, variant)
