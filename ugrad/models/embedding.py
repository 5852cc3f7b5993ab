"""The token embedding whose gradient accumulates in the parameters' dtype."""

from flax import nnx
import jax.numpy as jnp

from ugrad.models import sharding


class Embed(nnx.Embed):
  """`nnx.Embed` that gathers rows of the stored (float32) table and casts
  them to the compute dtype, instead of casting the whole table and
  gathering from it. The forward is the same numbers; the backward
  scatter-adds each token's gradient into a table of the parameters' dtype,
  where nnx.Embed under bfloat16 compute sums them in bfloat16 (a frequent
  token's thousands of gradients per step with an 8-bit mantissa) and
  all-reduces that table in bfloat16 across data-parallel replicas. On a
  data-parallel mesh the lookup's gradient is reduce-scattered on its own
  (`sharding.reduce_gradient_here`), not scattered into the head's share of
  a tied table."""

  def __call__(self, inputs, out_sharding=None):
    if out_sharding is not None or self.dtype is None:
      return super().__call__(inputs, out_sharding)
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError("Input type must be an integer or unsigned integer.")
    table = sharding.reduce_gradient_here(
        self.embedding[...], ("vocab", "embed")
    )
    return jnp.take(table, inputs, axis=0).astype(self.dtype)
