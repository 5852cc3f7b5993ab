"""A rule reward that also prefers short answers: 1 for a right final
answer, minus `PER_CHAR` for each character of the completion."""

import numpy as np

import ugrad

NAME = "concise"
PER_CHAR = 0.002


def concise(ctx: ugrad.RewardContext, batch) -> dict:
  rewards = [(ctx.task.reward(ex, text) if text else 0.0)
             - PER_CHAR * len(text)
             for ex, text in zip(batch.examples, batch.texts)]
  return {"rewards": np.asarray(rewards, np.float32)}


ugrad.register_reward(NAME, concise, replace=True)
