"""GRPO with the calculator tool on the hard embedded task.

Each sample is an episode (ugrad/environments): the policy may end a turn
with a call "(48*27)", the `calculator` environment appends "=1296" (tokens
the policy is not trained on), and the policy goes on; the outcome reward is
the final "#### n" answer's, as for `grpo.py`. The task is `HARD_TASK` of
experiments/sweeps (5 operands with multiplication) in its tools variant:
the SFT warm start's gold solutions call the calculator at every step on
half of the questions (`task_kwargs.tool_fraction`).
"""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "grpo_tools"
  c.source = "online"
  c.reward = "rule"
  c.coef = _common.coef("grpo")
  c.task_kwargs.num_operands = 5
  c.task_kwargs.operators = "+-*"
  c.task_kwargs.tools = True
  c.task_kwargs.tool_fraction = 0.5
  c.sampling.max_new_tokens = 96
  c.environment = "calculator"
  c.episodes.max_turns = 8
  base.apply_variants(c, variant)
  # The hard task's solutions need 96 tokens, "tiny" included.
  c.sampling.max_new_tokens = max(c.sampling.max_new_tokens, 96)
  return c
