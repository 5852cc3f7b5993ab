"""Group statistics over rows that share an id, in any row order.

A group is encoded by a [B, B] same-group matrix S: S[i, j] = 1 when rows i
and j have the same id and both have a completion. Every statistic is a
masked reduction over the last axis of S broadcast against the row values,
so it is jit-friendly and needs no sorting. Reductions are elementwise sums,
not matmuls, so accelerators' reduced-precision matmul passes cannot round
the group means.

The group advantages built on them (GRPO's `normalize`, RLOO's
`leave_one_out`) are exactly 0 in groups whose rewards are all equal: such
a group carries no signal, and `zero_signal` reports the fraction of them.
"""

import jax
import jax.numpy as jnp

from ugrad import masked


def real_rows(mask: jax.Array) -> jax.Array:
  """bool [B]: rows with at least one completion token."""
  return masked.masked_count(mask, axis=-1) > 0


def same_group(ids: jax.Array, mask: jax.Array) -> jax.Array:
  """bool [B, B] same-group matrix over rows with a completion.

  Args:
    ids: int [B] group (or pair) id of each row; any values, any order.
    mask: [B, T] completion mask. Rows without completion tokens are padding
      and belong to no group.

  Returns:
    [B, B] S with S[i, j] true iff ids[i] == ids[j] and both rows are real.
  """
  real = real_rows(mask)
  return (ids[:, None] == ids[None, :]) & real[:, None] & real[None, :]


def group_sum(x: jax.Array, same: jax.Array) -> jax.Array:
  """[B]: sum of `x` [B] over each row's group (0 for padding rows)."""
  return masked.masked_sum(
      jnp.broadcast_to(x[None, :], same.shape), same, axis=-1
  )


def group_count(same: jax.Array) -> jax.Array:
  """[B]: number of rows in each row's group."""
  return masked.masked_count(same, axis=-1)


def group_mean(x: jax.Array, same: jax.Array) -> jax.Array:
  """[B]: mean of `x` [B] over each row's group."""
  return group_sum(x, same) / jnp.maximum(group_count(same), 1)


def group_std(x: jax.Array, same: jax.Array, ddof: int = 1) -> jax.Array:
  """[B]: standard deviation of `x` over each row's group.

  Args:
    x: [B] values.
    same: [B, B] same-group matrix.
    ddof: 1 for the sample standard deviation (GRPO's convention).

  Returns:
    [B] the group's std, with the denominator floored at 1.
  """
  dev = jnp.square(x - group_mean(x, same))
  count = group_count(same)
  return jnp.sqrt(group_sum(dev, same) / jnp.maximum(count - ddof, 1))


def all_equal(x: jax.Array, same: jax.Array, where=True) -> jax.Array:
  """bool [B]: whether every value in the row's group is the same.

  Args:
    x: [B] one value per row (e.g. outcome rewards), or [B, T] values of
      which only those at `where` count (e.g. step rewards at step ends).
    same: [B, B] same-group matrix.
    where: [B, T] bool, for [B, T] values.

  Returns:
    [B] see `masked.group_all_equal`.
  """
  if x.ndim == 1:
    x = x[:, None]
  return masked.group_all_equal(x, where, same)


def zero_signal(x: jax.Array, same: jax.Array, where=True) -> jax.Array:
  """Fraction of groups whose values are all equal (`all_equal`'s args).

  Each row weighs 1/|group|, so every group counts once.
  """
  flag = all_equal(x, same, where)
  count = group_count(same)
  weight = jnp.where(count > 0, 1.0 / jnp.maximum(count, 1), 0.0)
  return jnp.sum(weight * flag) / jnp.maximum(jnp.sum(weight), 1e-12)


def normalize(
    rewards: jax.Array,
    same: jax.Array,
    std_normalize: bool = True,
    eps: float = 1e-6,
) -> jax.Array:
  """GRPO's outcome advantage (r_i - mean_G r) / (std_G r + eps).

  Args:
    rewards: [B] outcome rewards.
    same: [B, B] same-group matrix.
    std_normalize: divide by the sample std (ddof=1) plus `eps`; False gives
      Dr. GRPO's r_i - mean_G r.
    eps: added to the std, outside the square root.

  Returns:
    [B] advantages; exactly 0 in groups whose rewards are all equal and on
    padding rows.
  """
  adv = rewards - group_mean(rewards, same)
  if std_normalize:
    adv = adv / (group_std(rewards, same, ddof=1) + eps)
  return _zero_where_no_signal(adv, rewards, same)


def leave_one_out(rewards: jax.Array, same: jax.Array) -> jax.Array:
  """RLOO's advantage r_i - mean_{j != i} r_j over the group.

  Args:
    rewards: [B] outcome rewards.
    same: [B, B] same-group matrix; groups need at least 2 rows.

  Returns:
    [B] advantages, 0 in all-equal groups and on padding rows.
  """
  count = group_count(same)
  others = (group_sum(rewards, same) - rewards) / jnp.maximum(count - 1, 1)
  return _zero_where_no_signal(rewards - others, rewards, same)


def _zero_where_no_signal(adv, rewards, same):
  flat = all_equal(rewards, same) | (group_count(same) == 0)
  return jnp.where(flat, 0.0, adv)
