"""GRPO's data with a method and a reward from this directory.

  python -m experiments.main --config=examples/custom_method/config.py \
      --workdir=runs/custom --config.init_from=runs/grpo/sft
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batch_baseline  # pylint: disable=g-import-not-at-top
import concise_reward  # pylint: disable=g-import-not-at-top

from experiments.configs import _common  # pylint: disable=g-import-not-at-top
from experiments.configs import base  # pylint: disable=g-import-not-at-top


def get_config():
  c = base.get_config()
  c.method = batch_baseline.NAME
  c.source = "online"
  c.reward = concise_reward.NAME
  c.coef = _common.coef(batch_baseline.NAME)
  return c
