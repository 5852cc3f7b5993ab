"""Masked reductions shared by the loss, the coefficients and the metrics.

Every reduction guards its denominator, so an all-zero mask gives 0, not NaN.
"""

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Sum of `x` where `mask` is nonzero."""
  return jnp.sum(jnp.where(mask > 0, x, 0), axis=axis)


def masked_count(mask: jax.Array, axis=None) -> jax.Array:
  """Number of nonzero entries of `mask`, as the mask's float dtype."""
  return jnp.sum((mask > 0).astype(jnp.result_type(mask, jnp.float32)),
                 axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Mean of `x` over entries where `mask` is nonzero; 0 if there are none."""
  return masked_sum(x, mask, axis) / jnp.maximum(masked_count(mask, axis), 1)


def masked_var(x: jax.Array, mask: jax.Array, axis=None,
               ddof: int = 0) -> jax.Array:
  """Variance of `x` over masked entries, with `ddof` degrees of freedom."""
  mean = masked_mean(x, mask, axis)
  if axis is not None:
    mean = jnp.expand_dims(mean, axis)
  sq = masked_sum(jnp.square(x - mean), mask, axis)
  return sq / jnp.maximum(masked_count(mask, axis) - ddof, 1)


def masked_min(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Minimum of `x` over masked entries; 0 if there are none."""
  has = masked_count(mask, axis) > 0
  return jnp.where(has, jnp.min(jnp.where(mask > 0, x, jnp.inf), axis=axis),
                   0.0)


def masked_max(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Maximum of `x` over masked entries; 0 if there are none."""
  has = masked_count(mask, axis) > 0
  return jnp.where(has, jnp.max(jnp.where(mask > 0, x, -jnp.inf), axis=axis),
                   0.0)
