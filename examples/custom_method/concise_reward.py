"""A rule reward that also prefers short answers: 1 for a right final
answer, minus `PER_CHAR` for each character of the completion.

`register()` adds it to ugrad's rewards; the config that uses it calls it.
"""

import functools

import numpy as np

import ugrad

NAME = "concise"
PER_CHAR = 0.002


def concise(ctx: ugrad.RewardContext, batch) -> dict:
  rewards = [
      (ctx.task.reward(ex, text) if text else 0.0) - PER_CHAR * len(text)
      for ex, text in zip(batch.examples, batch.texts)
  ]
  return {"rewards": np.asarray(rewards, np.float32)}


@functools.cache  # Once per process: a config may be loaded several times.
def register():
  """Adds `concise` to ugrad's rewards under NAME.

  Raises:
    ugrad.errors.UserError: when another reward already has that name.
  """
  ugrad.register_reward(NAME, concise)
