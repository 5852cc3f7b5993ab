"""Diagnostics of process supervision's advantages, logged per step.

`grpo_process` gives each token the sum of the group-normalised rewards of
the steps ending at or after it, so a token's advantage grows with the
number of steps still to come: the first step's tokens carry the largest.
`process_advantage_stats` reports how that scale is spread over positions
and how many steps the completions hold, from a scored batch on the host.
"""

import jax.numpy as jnp
import numpy as np

from ugrad import rollout as rollout_lib
from ugrad.coefficients import grpo
from ugrad.coefficients import groups


def _masked_mean(x: np.ndarray, where: np.ndarray) -> float:
  return float(x[where].mean()) if where.any() else 0.0


def _masked_abs_mean(x: np.ndarray, where: np.ndarray) -> float:
  return _masked_mean(np.abs(x), where)


def process_advantage_stats(
    rollout: rollout_lib.Rollout, std_normalize: bool = True, eps: float = 1e-6
) -> dict:
  """Scalars on `grpo_process`'s advantages A_t for a scored rollout.

  Args:
    rollout: a batch with `step_rewards`, `step_mask`, `group_ids` and its
      completion mask.
    std_normalize, eps: as `grpo.process_advantages`.

  Returns:
    "process/" keys: steps per completion (mean, max), the share of steps
    labelled right and of completions whose first step is right, mean |A|
    over all completion tokens, on the first step's tokens (up to its last
    token) and on the last step's, max |A|, the signed mean A on the first
    and last step's tokens, the mean over rows of each row's token mean of
    A (`adv_row_mean`, the net push under the `sequence` normaliser), the
    mean -log pi_old of the sampled tokens (an entropy estimate; 0 without
    logp_old), and the share of completion tokens after the last step's
    last visible token (the EOS), which belong to the last step.
  """
  mask = np.asarray(rollout.completion_mask) > 0
  steps = (np.asarray(rollout.step_mask) > 0) & mask
  rewards = np.asarray(rollout.step_rewards, np.float32)
  same = groups.same_group(jnp.asarray(rollout.group_ids), jnp.asarray(mask))
  adv = np.asarray(
      grpo.process_advantages(
          jnp.asarray(rewards),
          jnp.asarray(steps),
          jnp.asarray(mask, jnp.float32),
          same,
          std_normalize,
          eps,
      )
  )
  real = mask.any(1)
  count = steps.sum(1)
  # Steps ending strictly before each token: 0 on the first step's tokens,
  # count - 1 on the last step's, count after its last visible token (the
  # EOS, which `last` counts with the last step).
  before = np.cumsum(steps, 1) - steps
  first = mask & (before == 0) & (count[:, None] > 0)
  last = mask & (before >= count[:, None] - 1) & (count[:, None] > 0)
  after = mask & (before == count[:, None])
  with_steps = real & (count > 0)
  first_reward = rewards[np.arange(len(rewards)), np.argmax(steps, 1)]
  # The net push on each row under the `sequence` normaliser: its token mean
  # of A (an outcome group advantage sums to 0 over each group).
  row_mean = (adv * mask).sum(1) / np.maximum(mask.sum(1), 1)
  logp = rollout.logp_old
  return {
      "process/steps_mean": float(count[real].mean()) if real.any() else 0.0,
      "process/steps_max": float(count.max(initial=0)),
      "process/step_reward_mean": (
          float(rewards[steps].mean()) if steps.any() else 0.0
      ),
      "process/first_step_right": (
          float(first_reward[with_steps].mean()) if with_steps.any() else 0.0
      ),
      "process/adv_abs_mean": _masked_abs_mean(adv, mask),
      "process/adv_abs_first_step": _masked_abs_mean(adv, first),
      "process/adv_abs_last_step": _masked_abs_mean(adv, last),
      "process/adv_abs_max": float(np.abs(adv[mask]).max(initial=0.0)),
      "process/adv_mean_first_step": _masked_mean(adv, first),
      "process/adv_mean_last_step": _masked_mean(adv, last),
      "process/adv_row_mean": float(row_mean[real].mean())
      if real.any()
      else 0.0,
      "process/sampled_nll": (
          _masked_mean(-np.asarray(logp), mask) if logp is not None else 0.0
      ),
      "process/after_last_step_frac": (
          float(after.sum() / mask.sum()) if mask.any() else 0.0
      ),
  }
