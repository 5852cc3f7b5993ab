"""The token embedding: nnx.Embed's numbers forward, its gradient summed in
the parameters' dtype."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ugrad.models import embedding


def _embedding_grad(cls, tokens, cotangent):
  layer = cls(
      8, 16, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
  )
  graphdef, state = nnx.split(layer)
  out, vjp = jax.vjp(lambda s: nnx.merge(graphdef, s)(tokens), state)
  return out, vjp(cotangent)[0]["embedding"][...]


def test_a_frequent_token_gradient_sums_in_float32():
  """4,096 positions of one token under bfloat16 compute: the table's
  gradient is the float32 sum of their cotangents. nnx.Embed sums them in
  bfloat16: once the sum passes a few hundred, adding ~1 rounds away, and
  its gradient for that token is 88% short."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(np.r_[np.zeros(4096), rng.integers(1, 8, 64)], jnp.int32)
  cotangent = jnp.asarray(
      rng.normal(1.0, 0.1, (tokens.shape[0], 16)), jnp.bfloat16
  )
  expected = jax.ops.segment_sum(cotangent.astype(jnp.float32), tokens, 8)
  out, grad = _embedding_grad(embedding.Embed, tokens, cotangent)
  assert out.dtype == jnp.bfloat16 and grad.dtype == jnp.float32
  np.testing.assert_allclose(grad, expected, rtol=1e-5)
  reference_out, reference_grad = _embedding_grad(nnx.Embed, tokens, cotangent)
  np.testing.assert_array_equal(out, reference_out)  # the same forward
  assert (
      np.abs(reference_grad - expected).max()
      > 100 * np.abs(grad - expected).max()
  )
