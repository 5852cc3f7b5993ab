"""Masked reductions shared by the loss, the coefficients and the metrics.

Every reduction guards its denominator, so an all-zero mask gives 0, not NaN.
`last_index`, `last_token` and `group_all_equal` also serve host code: their
`xp` argument is `jax.numpy` (the default) or `numpy`, and both give the same
answer, since they only select and compare values.
"""

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Sum of `x` where `mask` is nonzero."""
  return jnp.sum(jnp.where(mask > 0, x, 0), axis=axis)


def masked_count(mask: jax.Array, axis=None) -> jax.Array:
  """Number of nonzero entries of `mask`, as the mask's float dtype."""
  return jnp.sum(
      (mask > 0).astype(jnp.result_type(mask, jnp.float32)), axis=axis
  )


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Mean of `x` over entries where `mask` is nonzero; 0 if there are none."""
  return masked_sum(x, mask, axis) / jnp.maximum(masked_count(mask, axis), 1)


def masked_var(
    x: jax.Array, mask: jax.Array, axis=None, ddof: int = 0
) -> jax.Array:
  """Variance of `x` over masked entries, with `ddof` degrees of freedom."""
  mean = masked_mean(x, mask, axis)
  if axis is not None:
    mean = jnp.expand_dims(mean, axis)
  sq = masked_sum(jnp.square(x - mean), mask, axis)
  return sq / jnp.maximum(masked_count(mask, axis) - ddof, 1)


def masked_min(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Minimum of `x` over masked entries; 0 if there are none."""
  has = masked_count(mask, axis) > 0
  return jnp.where(
      has, jnp.min(jnp.where(mask > 0, x, jnp.inf), axis=axis), 0.0
  )


def masked_max(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Maximum of `x` over masked entries; 0 if there are none."""
  has = masked_count(mask, axis) > 0
  return jnp.where(
      has, jnp.max(jnp.where(mask > 0, x, -jnp.inf), axis=axis), 0.0
  )


def last_index(mask, xp=jnp):
  """int [B]: the column of the last nonzero entry of each row of `mask`.

  Args:
    mask: [B, T] mask, e.g. the completion or the attention mask.
    xp: `jax.numpy`, or `numpy` for host arrays.

  Returns:
    [B] the last column where `mask > 0`; -1 in a row without one.
  """
  on = mask > 0
  return xp.max(xp.where(on, xp.arange(on.shape[-1]), -1), axis=-1)


def last_token(mask, xp=jnp):
  """bool [B, T]: true at `last_index`, all false in a row without one."""
  return xp.arange(mask.shape[-1]) == last_index(mask, xp)[..., None]


def group_all_equal(x, where, same, xp=jnp):
  """bool [B]: whether the values of each row's group are all equal.

  Compared exactly (max <= min) rather than through a variance, whose
  rounding would leave tiny nonzero advantages in zero-signal groups.

  Args:
    x: [B, T] values (a [B, 1] column for one value per row).
    where: [B, T] bool (or a scalar), the entries of `x` that count.
    same: [B, B] bool same-group matrix: `same[i, j]` when rows i and j are
      in one group.
    xp: `jax.numpy`, or `numpy` for host arrays.

  Returns:
    [B] true where every counted value in the row's group is the same, and
    where the group has no counted value at all; false where any is NaN.
  """
  row_high = xp.max(xp.where(where, x, -xp.inf), axis=-1)
  row_low = xp.min(xp.where(where, x, xp.inf), axis=-1)
  high = xp.max(xp.where(same, row_high[None, :], -xp.inf), axis=-1)
  low = xp.min(xp.where(same, row_low[None, :], xp.inf), axis=-1)
  return high <= low
