"""Process supervision's advantage diagnostics, checked by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from ugrad import rollout as rollout_lib
from ugrad.coefficients import process_stats


def _rollout():
  """One group of two rows, 1 prompt token then 6 completion tokens.

  Row 0: steps end at columns 2, 4, 6 with labels 1, 1, 1 (no EOS after).
  Row 1: steps end at columns 3, 5 with labels 1, 0; column 6 is EOS.
  """
  mask = np.array([[0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], np.float32)
  steps = np.zeros_like(mask)
  rewards = np.zeros_like(mask)
  steps[0, [2, 4, 6]] = 1
  rewards[0, [2, 4, 6]] = 1
  steps[1, [3, 5]] = 1
  rewards[1, 3] = 1
  return rollout_lib.Rollout(
      tokens=jnp.zeros(mask.shape, jnp.int32),
      completion_mask=jnp.asarray(mask),
      attention_mask=jnp.ones(mask.shape, jnp.float32),
      step_rewards=jnp.asarray(rewards),
      step_mask=jnp.asarray(steps),
      group_ids=jnp.zeros(2, jnp.int32),
  )


def test_stats_split_the_advantage_by_step_position():
  stats = process_stats.process_advantage_stats(_rollout(), eps=0.0)
  # Five step rewards 1, 1, 1, 1, 0: mean 0.8, sample std sqrt(0.2).
  z_one, z_zero = 0.2 / np.sqrt(0.2), -0.8 / np.sqrt(0.2)
  # Row 0 tokens 1-2 (first step) sum three z_one; 3-4 two; 5-6 one.
  # Row 1 tokens 1-3 sum z_one + z_zero; 4-5 z_zero; 6 (EOS), part of the
  # last step, z_zero too.
  row0 = [3 * z_one] * 2 + [2 * z_one] * 2 + [z_one] * 2
  row1 = [z_one + z_zero] * 3 + [z_zero] * 3
  everything = np.abs(row0 + row1)
  assert stats["process/adv_abs_mean"] == pytest.approx(everything.mean())
  assert stats["process/adv_abs_max"] == pytest.approx(everything.max())
  assert stats["process/adv_abs_first_step"] == pytest.approx(
      np.abs(row0[:2] + row1[:3]).mean()
  )
  assert stats["process/adv_abs_last_step"] == pytest.approx(
      np.abs(row0[4:] + row1[3:]).mean()
  )
  assert stats["process/adv_mean_first_step"] == pytest.approx(
      np.mean(row0[:2] + row1[:3])
  )
  assert stats["process/adv_mean_last_step"] == pytest.approx(
      np.mean(row0[4:] + row1[3:])
  )
  assert stats["process/adv_row_mean"] == pytest.approx(
      (np.mean(row0) + np.mean(row1)) / 2
  )
  assert stats["process/sampled_nll"] == 0.0  # no logp_old
  assert stats["process/steps_mean"] == 2.5
  assert stats["process/steps_max"] == 3.0
  assert stats["process/step_reward_mean"] == pytest.approx(0.8)
  assert stats["process/first_step_right"] == 1.0
  assert stats["process/after_last_step_frac"] == pytest.approx(1 / 12)


def test_sampled_nll_is_the_mean_over_completion_tokens():
  ro = _rollout()
  logp = np.full(ro.tokens.shape, -0.5, np.float32)
  logp[:, 0] = -9.0  # the prompt column does not count
  stats = process_stats.process_advantage_stats(
      ro.replace(logp_old=jnp.asarray(logp))
  )
  assert stats["process/sampled_nll"] == pytest.approx(0.5)
