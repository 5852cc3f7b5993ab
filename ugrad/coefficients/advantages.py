"""Advantage estimators: pure functions that methods are assembled from.

Outcome estimators map rewards [B] to advantages [B] over groups (see
`groups`); token estimators map per-token rewards [B, T] to advantages
[B, T] and are zero off the completion mask.
"""

import jax
import jax.numpy as jnp

from ugrad import masked
from ugrad.coefficients import groups


def group_normalize(rewards: jax.Array, same: jax.Array,
                    std_normalize: bool = True,
                    eps: float = 1e-6) -> jax.Array:
  """GRPO's outcome advantage (r_i - mean_G r) / (std_G r + eps).

  Args:
    rewards: [B] outcome rewards.
    same: [B, B] same-group matrix (`groups.same_group`).
    std_normalize: divide by the sample std (ddof=1) plus `eps`; False gives
      Dr. GRPO's r_i - mean_G r.
    eps: added to the std, outside the square root.

  Returns:
    [B] advantages; exactly 0 in groups whose rewards are all equal and on
    padding rows.
  """
  adv = rewards - groups.group_mean(rewards, same)
  if std_normalize:
    adv = adv / (groups.group_std(rewards, same, ddof=1) + eps)
  return _zero_where_no_signal(adv, rewards, same)


def leave_one_out(rewards: jax.Array, same: jax.Array) -> jax.Array:
  """RLOO's advantage r_i - mean_{j != i} r_j over the group.

  Args:
    rewards: [B] outcome rewards.
    same: [B, B] same-group matrix; groups need at least 2 rows.

  Returns:
    [B] advantages, 0 in all-equal groups and on padding rows.
  """
  count = groups.group_count(same)
  others = (groups.group_sum(rewards, same) - rewards) / jnp.maximum(
      count - 1, 1)
  return _zero_where_no_signal(rewards - others, rewards, same)


def _zero_where_no_signal(adv, rewards, same):
  flat = groups.all_equal(rewards, same) | (groups.group_count(same) == 0)
  return jnp.where(flat, 0.0, adv)


def reverse_cumsum(x: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, T]: sum_{s >= t} x_s over completion tokens, 0 off the mask."""
  x = jnp.where(mask > 0, x, 0)
  tail = jnp.flip(jnp.cumsum(jnp.flip(x, -1), -1), -1)
  return jnp.where(mask > 0, tail, 0)


def last_token(mask: jax.Array) -> jax.Array:
  """bool [B, T]: the last completion token of each row (none if empty)."""
  on = mask > 0
  t = mask.shape[-1]
  last = t - 1 - jnp.argmax(jnp.flip(on, -1), axis=-1)
  return (jnp.arange(t)[None, :] == last[:, None]) & jnp.any(
      on, -1, keepdims=True)


def outcome_token_rewards(rewards: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, T]: the outcome reward placed on the last completion token."""
  return jnp.where(last_token(mask), rewards[:, None], 0.0)


def process_advantages(step_rewards: jax.Array, step_mask: jax.Array,
                       mask: jax.Array, same: jax.Array,
                       std_normalize: bool = True,
                       eps: float = 1e-6) -> jax.Array:
  """GRPO process supervision (DeepSeekMath section 4.1.3).

  The step rewards of a whole group are normalised together (mean and
  sample std over every step of every sample in the group); each token then
  gets the sum of the normalised rewards of the steps ending at or after it.

  Args:
    step_rewards: [B, T] reward of each step at its last token.
    step_mask: [B, T] 1 at the last token of each step.
    mask: [B, T] completion mask; steps outside it are ignored.
    same: [B, B] same-group matrix.
    std_normalize: divide by the sample std (ddof=1) plus `eps`.
    eps: added to the std, outside the square root.

  Returns:
    [B, T] advantages, 0 off the completion mask and in groups whose step
    rewards are all equal.
  """
  steps = (step_mask > 0) & (mask > 0)
  count = groups.group_sum(masked.masked_count(steps, axis=-1), same)
  total = groups.group_sum(masked.masked_sum(step_rewards, steps, axis=-1),
                           same)
  centred = step_rewards - (total / jnp.maximum(count, 1))[:, None]
  normed = centred
  if std_normalize:
    dev = groups.group_sum(
        masked.masked_sum(jnp.square(centred), steps, axis=-1), same)
    std = jnp.sqrt(dev / jnp.maximum(count - 1, 1))
    normed = centred / (std + eps)[:, None]
  flat = groups.all_equal_tokens(step_rewards, steps, same)
  normed = jnp.where(steps & ~flat[:, None], normed, 0.0)
  return reverse_cumsum(normed, mask)


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array,
        gamma: float, lam: float):
  """Generalised advantage estimation over completion tokens.

  A reverse `lax.scan` over time; tokens off the mask are skipped (the
  carry passes through them unchanged), and the value after the last
  completion token is 0.

  Args:
    rewards: [B, T] per-token rewards.
    values: [B, T] critic values V(s_t).
    mask: [B, T] completion mask.
    gamma: discount.
    lam: GAE lambda.

  Returns:
    (advantages, returns): [B, T] each, 0 off the mask; returns = A + V are
    the critic's regression targets.
  """
  on = mask > 0

  def step(carry, inputs):
    next_value, next_adv = carry
    reward, value, live = inputs
    delta = reward + gamma * next_value - value
    adv = delta + gamma * lam * next_adv
    carry = (jnp.where(live, value, next_value),
             jnp.where(live, adv, next_adv))
    return carry, jnp.where(live, adv, 0.0)

  dtype = jnp.result_type(rewards, values)
  zeros = jnp.zeros(rewards.shape[:1], dtype)
  _, adv = jax.lax.scan(step, (zeros, zeros),
                        (rewards.T.astype(dtype), values.T.astype(dtype),
                         on.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(on, adv + values, 0.0)


def masked_whiten(x: jax.Array, mask: jax.Array,
                  eps: float = 1e-8) -> jax.Array:
  """(x - mean) / sqrt(max(var, eps)) over completion tokens of the batch.

  The population variance (ddof=0) with the floor of OpenRLHF's advantage
  normalisation, so a constant batch gives 0, not NaN.

  Args:
    x: [B, T] values.
    mask: [B, T] completion mask.
    eps: variance floor.

  Returns:
    [B, T] whitened values, 0 off the mask.
  """
  mean = masked.masked_mean(x, mask)
  var = masked.masked_var(x, mask)
  return jnp.where(mask > 0, (x - mean) * jax.lax.rsqrt(
      jnp.maximum(var, eps)), 0.0)
