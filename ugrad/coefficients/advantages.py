"""Token advantage estimators, shared by PPO, REINFORCE++ and process GRPO.

They map per-token rewards [B, T] to advantages [B, T] and are zero off the
completion mask. The group (outcome) advantages are in `groups`.
"""

import jax
import jax.numpy as jnp

from ugrad import masked


def reverse_cumsum(x: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, T]: sum_{s >= t} x_s over completion tokens, 0 off the mask."""
  x = jnp.where(mask > 0, x, 0)
  tail = jnp.flip(jnp.cumsum(jnp.flip(x, -1), -1), -1)
  return jnp.where(mask > 0, tail, 0)


def last_step_to_end(
    step_values: jax.Array, steps: jax.Array, mask: jax.Array
) -> jax.Array:
  """[B, T]: `step_values` with each row's last step moved to its last
  completion token.

  A step's value sits at the step's last visible token; the tokens after
  the last step (the EOS, trailing white space) still belong to it, and a
  reverse cumulative sum of the result gives them the last step's value
  instead of 0.

  Args:
    step_values: [B, T] a value at each step end, 0 elsewhere.
    steps: [B, T] bool, the step ends inside the completion.
    mask: [B, T] completion mask.
  """
  remaining = reverse_cumsum(steps.astype(jnp.int32), mask)
  is_last = steps & (remaining == 1)
  last = jnp.sum(jnp.where(is_last, step_values, 0), axis=-1)
  moved = jnp.where(is_last, 0, step_values)
  return jnp.where(masked.last_token(mask), moved + last[:, None], moved)


def outcome_token_rewards(rewards: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, T]: the outcome reward placed on the last completion token."""
  return jnp.where(masked.last_token(mask), rewards[:, None], 0.0)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    gamma: float,
    lam: float,
):
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
    carry = (jnp.where(live, value, next_value), jnp.where(live, adv, next_adv))
    return carry, jnp.where(live, adv, 0.0)

  dtype = jnp.result_type(rewards, values)
  zeros = jnp.zeros(rewards.shape[:1], dtype)
  _, adv = jax.lax.scan(
      step,
      (zeros, zeros),
      (rewards.T.astype(dtype), values.T.astype(dtype), on.T),
      reverse=True,
  )
  adv = adv.T
  return adv, jnp.where(on, adv + values, 0.0)


def masked_whiten(
    x: jax.Array, mask: jax.Array, eps: float = 1e-8
) -> jax.Array:
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
  return jnp.where(
      mask > 0, (x - mean) * jax.lax.rsqrt(jnp.maximum(var, eps)), 0.0
  )
