"""Group statistics over rows that share an id, in any row order.

A group is encoded by a [B, B] same-group matrix S: S[i, j] = 1 when rows i
and j have the same id and both have a completion. Every statistic is a
masked reduction over the last axis of S broadcast against the row values,
so it is jit-friendly and needs no sorting. Reductions are elementwise sums,
not matmuls, so accelerators' reduced-precision matmul passes cannot round
the group means.
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
  return masked.masked_sum(jnp.broadcast_to(x[None, :], same.shape), same,
                           axis=-1)


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


def all_equal(x: jax.Array, same: jax.Array) -> jax.Array:
  """bool [B]: whether every value in the row's group is the same.

  Compared exactly (max == min) rather than through a variance, whose
  rounding would leave tiny nonzero advantages in zero-signal groups.
  """
  return (_reduce(x, same, jnp.max, -jnp.inf) <=
          _reduce(x, same, jnp.min, jnp.inf))


def all_equal_tokens(x: jax.Array, where: jax.Array,
                     same: jax.Array) -> jax.Array:
  """bool [B]: whether every selected token value in the row's group is equal.

  Args:
    x: [B, T] values (e.g. step rewards).
    where: [B, T] bool, the tokens that count (e.g. step ends).
    same: [B, B] same-group matrix.

  Returns:
    [B] true for groups whose selected values are all equal (or absent).
  """
  row_high = jnp.max(jnp.where(where, x, -jnp.inf), axis=-1)
  row_low = jnp.min(jnp.where(where, x, jnp.inf), axis=-1)
  return (_reduce(row_high, same, jnp.max, -jnp.inf) <=
          _reduce(row_low, same, jnp.min, jnp.inf))


def _reduce(x, same, reduce, fill):
  return reduce(jnp.where(same, x[None, :], fill), axis=-1)


def group_fraction(flag: jax.Array, same: jax.Array) -> jax.Array:
  """Fraction of groups whose rows carry `flag` (bool [B], constant per group).

  Each row weighs 1/|group|, so every group counts once.
  """
  count = group_count(same)
  weight = jnp.where(count > 0, 1.0 / jnp.maximum(count, 1), 0.0)
  return jnp.sum(weight * flag) / jnp.maximum(jnp.sum(weight), 1e-12)
