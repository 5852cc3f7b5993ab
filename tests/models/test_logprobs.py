"""The vocabulary head, `ugrad.models.logprobs.token_logprobs`: chunked by
flattened tokens, against one unchunked log-softmax."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad import errors
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

V = 24
B, T = 3, 10  # 27 predicted tokens.


def _config(**overrides):
  base = dict(
      vocab_size=V,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=48,
      qkv_bias=True,
      rope_theta=5000.0,
      tie_embeddings=False,
  )
  base.update(overrides)
  return model_config.ModelConfig(**base)


def _inputs():
  """Tokens and a left-padding attention mask, rows of 10, 6 and 3."""
  tokens = np.random.default_rng(0).integers(0, V, (B, T))
  mask = np.arange(T)[None, :] >= T - np.asarray([10, 6, 3])[:, None]
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, jnp.int32)


def _unchunked(model, tokens, mask):
  """log_softmax(hidden @ W)[targets] over all [B, T-1] tokens at once, the
  logits in float32 (float64) from the compute-dtype operands."""
  hidden = model.hidden(tokens, mask)[:, :-1]
  w = model.output_embedding().astype(hidden.dtype)
  wide = model_config.wide(hidden.dtype)
  logits = hidden.astype(wide) @ w.astype(wide)  # Exact products.
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  return jnp.pad(picked, ((0, 0), (1, 0)))


def _grads(fn, graphdef, params, tokens, mask):
  """Gradient of a weighted sum of the log-probs, under jit."""
  weights = jax.random.normal(jax.random.key(1), tokens.shape)

  def loss(p):
    logp = fn(nnx.merge(graphdef, p), tokens, mask)
    return jnp.sum(weights.astype(logp.dtype) * logp)

  return jax.jit(jax.grad(loss))(params)


def _assert_trees_close(got, want, rtol, atol):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# 1: one row-position at a time (more rows than tokens); 4, 7: one / two
# positions of the 3 rows, the last chunk partly padding; 12: four
# positions; 1024: a single chunk.
_CHUNKS = [1, 4, 7, 12, 1024]


@pytest.mark.parametrize("chunk_tokens", _CHUNKS)
def test_float32_equals_unchunked_values_and_gradients(chunk_tokens):
  model = tr.Transformer(_config(), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tokens, mask = _inputs()

  def chunked(m, tokens, mask):
    return logprobs.token_logprobs(m, tokens, mask, chunk_tokens=chunk_tokens)

  got = jax.jit(lambda p: chunked(nnx.merge(graphdef, p), tokens, mask))(params)
  assert got.shape == (B, T) and got.dtype == jnp.float32
  np.testing.assert_array_equal(got[:, 0], 0.0)
  np.testing.assert_allclose(
      got, _unchunked(model, tokens, mask), rtol=1e-6, atol=1e-6
  )
  _assert_trees_close(
      _grads(chunked, graphdef, params, tokens, mask),
      _grads(_unchunked, graphdef, params, tokens, mask),
      rtol=1e-5,
      atol=1e-6,
  )


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("chunk_tokens", [4, 7, 1024])
def test_float64_equals_unchunked_to_rounding(x64, tie, chunk_tokens):
  del x64
  cfg = _config(dtype="float64", param_dtype="float64", tie_embeddings=tie)
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  tokens, mask = _inputs()

  def chunked(m, tokens, mask):
    return logprobs.token_logprobs(m, tokens, mask, chunk_tokens=chunk_tokens)

  model = nnx.merge(graphdef, params)
  got = chunked(model, tokens, mask)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(
      got, _unchunked(model, tokens, mask), rtol=1e-12, atol=1e-12
  )
  _assert_trees_close(
      _grads(chunked, graphdef, params, tokens, mask),
      _grads(_unchunked, graphdef, params, tokens, mask),
      rtol=1e-9,
      atol=1e-12,
  )


def test_bfloat16_model_logits_are_not_rounded():
  # bf16 compute, float32 parameters: the logits are the float32 sums of
  # the bf16 products, not rounded to bf16 (2^-8 relative) before the
  # log-softmax; the gradients come back float32.
  cfg = _config(dtype="bfloat16")
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  model = nnx.merge(graphdef, params)
  tokens, mask = _inputs()
  got = logprobs.token_logprobs(model, tokens, mask, chunk_tokens=4)
  assert got.dtype == jnp.float32
  want = _unchunked(model, tokens, mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def chunked(m, tokens, mask):
    return logprobs.token_logprobs(m, tokens, mask, chunk_tokens=4)

  grads = _grads(chunked, graphdef, params, tokens, mask)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  # Rounded to bf16 once in the backward pass (the logits' cotangent), as
  # autodiff of bf16 logits would be.
  want = _grads(_unchunked, graphdef, params, tokens, mask)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
    assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(b)


def test_chunk_tokens_below_one_is_a_user_error():
  model = tr.Transformer(_config(), rngs=nnx.Rngs(0))
  tokens, mask = _inputs()
  with pytest.raises(errors.UserError, match="chunk_tokens=0 must be >= 1"):
    logprobs.token_logprobs(model, tokens, mask, chunk_tokens=0)


def _temp_bytes(rows, chunk_tokens, vocab=8192, t=65):
  """Compiled temp bytes of the head's gradient at `rows` rows, a vocabulary
  wide enough that its logits dominate every other buffer."""
  cfg = _config(
      vocab_size=vocab,
      hidden_size=16,
      num_heads=2,
      num_kv_heads=2,
      mlp_size=16,
      num_layers=1,
  )
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  tokens = jnp.zeros((rows, t), jnp.int32)

  def loss(p):
    return logprobs.token_logprobs(
        nnx.merge(graphdef, p), tokens, chunk_tokens=chunk_tokens
    ).sum()

  compiled = jax.jit(jax.grad(loss)).lower(params).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_head_memory_is_flat_in_the_batch():
  # 64 tokens per chunk: 16 rows x 4 positions, then 64 x 1. The rest of the
  # model grows with the rows; the head's share (what a wide vocabulary
  # adds) does not: it stays one [64, V] block, not [rows, 4, V].
  wide, narrow = 8192, 64
  block = 64 * wide * 4
  growth = _temp_bytes(64, 64) - _temp_bytes(16, 64)
  rest = _temp_bytes(64, 64, vocab=narrow) - _temp_bytes(16, 64, vocab=narrow)
  assert abs(growth - rest) < block / 4, (growth, rest)
  # The check can see a block: 256 tokens per chunk hold 3 more.
  assert _temp_bytes(64, 256) - _temp_bytes(64, 64) > 2 * block
