"""The chunked vocabulary head of `ugrad.models.logprobs.token_logprobs`."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

V = 24
T = 10


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


def _tokens(b, t, seed=0):
  return jnp.asarray(
      np.random.default_rng(seed).integers(0, V, (b, t)), jnp.int32
  )


def _left_pad_mask(lengths, t):
  return jnp.asarray(
      np.arange(t)[None, :] >= t - np.asarray(lengths)[:, None], jnp.int32
  )


def _layout():
  """Three rows of P=4 left-padded prompt + N=6 right-padded completion:
  tokens, attention mask, completion mask (row 2 has no completion)."""
  prompt = np.asarray(_left_pad_mask([4, 2, 3], 4))
  completion = np.asarray([[1] * 6, [1, 1, 1, 0, 0, 0], [0] * 6])
  attention = jnp.asarray(np.concatenate([prompt, completion], 1))
  completion = jnp.asarray(np.concatenate([0 * prompt, completion], 1))
  return _tokens(3, T), attention, completion


def _unchunked(model, tokens, mask=None):
  """log softmax(hidden @ W)[targets] in one wide dot, the reference."""
  hidden = model.hidden(tokens, mask)[:, :-1]
  w = model.output_embedding().astype(hidden.dtype)
  wide = model_config.wide(hidden.dtype)
  flat = hidden.reshape(-1, hidden.shape[-1]).astype(wide)
  logits = flat @ w.astype(wide)
  picked = jnp.take_along_axis(logits, tokens[:, 1:].reshape(-1, 1), -1)
  logp = picked[:, 0] - jax.nn.logsumexp(logits, axis=-1)
  return jnp.pad(logp.reshape(tokens.shape[0], -1), ((0, 0), (1, 0)))


def _naive_logprobs(model, tokens, mask=None):
  """From the model's own (compute-dtype) [B, T, V] logits."""
  logits = model(tokens, mask)
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  return jnp.pad(picked, ((0, 0), (1, 0)))


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 27, 4096])
@pytest.mark.parametrize("completion_only", [False, True])
def test_chunked_equals_unchunked_under_jit(chunk_tokens, completion_only):
  # 27 tokens per row block: chunks of 4 and 7 leave a partial last chunk.
  model = tr.Transformer(_config(), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tokens, mask, completion = _layout()
  positions = completion if completion_only else None

  @jax.jit
  def logp_fn(params, tokens, mask, positions):
    return logprobs.token_logprobs(
        nnx.merge(graphdef, params),
        tokens,
        mask,
        positions=positions,
        chunk_tokens=chunk_tokens,
    )

  got = logp_fn(params, tokens, mask, positions)
  assert got.shape == (3, T) and got.dtype == jnp.float32
  want = _unchunked(model, tokens, mask)
  if completion_only:
    want = jnp.where(completion > 0, want, 0.0)
    np.testing.assert_array_equal(np.asarray(got)[completion == 0], 0.0)
  np.testing.assert_array_equal(got[:, 0], 0.0)
  # To the last bits (eagerly bit for bit; jit fuses the sums differently).
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      _naive_logprobs(model, tokens, mask)[:, 1:],
      _unchunked(model, tokens, mask)[:, 1:],
      atol=1e-5,
  )


@pytest.mark.parametrize("chunk_tokens", [3, 5, 4096])
def test_completion_only_in_float64_is_exact_to_rounding(x64, chunk_tokens):
  del x64
  cfg = _config(dtype="float64", param_dtype="float64")
  model = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  tokens, mask, completion = _layout()
  got = logprobs.token_logprobs(
      model, tokens, mask, positions=completion, chunk_tokens=chunk_tokens
  )
  assert got.dtype == jnp.float64
  want = jnp.where(completion > 0, _unchunked(model, tokens, mask), 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_bfloat16_logits_are_not_rounded():
  cfg = _config(dtype="bfloat16")
  model = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  # Larger weights spread the logits so bf16 rounding shows (~1e-2).
  graphdef, params = nnx.split(model, nnx.Param)
  params = jax.tree.map(lambda p: p * 20, params)
  model = nnx.merge(graphdef, params)
  tokens, mask, completion = _layout()
  got = logprobs.token_logprobs(
      model, tokens, mask, positions=completion, chunk_tokens=5
  )
  # bf16 hidden states and weights, float32 products and sums.
  want = jnp.where(completion > 0, _unchunked(model, tokens, mask), 0.0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)
  # What rounding the logits to bf16 first would give: off by far more.
  rounded = jnp.where(completion > 0, _naive_logprobs(model, tokens, mask), 0)
  assert float(jnp.max(jnp.abs(rounded - want))) > 1e-3


@pytest.mark.parametrize("completion_only", [False, True])
def test_gradient_matches_unchunked(x64, completion_only):
  del x64
  cfg = _config(tie_embeddings=True, dtype="float64", param_dtype="float64")
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  tokens, mask, completion = _layout()
  positions = completion if completion_only else None
  weights = jax.random.normal(jax.random.key(0), (3, T), jnp.float64)
  if completion_only:
    weights = weights * completion

  def grad(fn):
    loss = lambda p: jnp.sum(weights * fn(nnx.merge(graphdef, p)))
    return jax.tree.leaves(jax.jit(jax.grad(loss))(params))

  chunked = grad(
      lambda m: logprobs.token_logprobs(
          m, tokens, mask, positions=positions, chunk_tokens=4
      )
  )
  for a, b in zip(chunked, grad(lambda m: _unchunked(m, tokens, mask))):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_float32_gradient_matches_unchunked():
  graphdef, params = nnx.split(
      tr.Transformer(_config(), rngs=nnx.Rngs(0)), nnx.Param
  )
  tokens, mask, completion = _layout()

  def grad(fn):
    loss = lambda p: jnp.sum(completion * fn(nnx.merge(graphdef, p)))
    return jax.tree.leaves(jax.jit(jax.grad(loss))(params))

  chunked = grad(
      lambda m: logprobs.token_logprobs(
          m, tokens, mask, positions=completion, chunk_tokens=6
      )
  )
  for a, b in zip(chunked, grad(lambda m: _unchunked(m, tokens, mask))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _head_temp_bytes(b, chunk_tokens, completion_only):
  """temp bytes of the head's gradient alone for b rows of 64 tokens."""
  vocab, t, d = 8192, 64, 16
  hidden = jax.ShapeDtypeStruct((b, t, d), jnp.float32)
  w = jax.ShapeDtypeStruct((d, vocab), jnp.float32)

  class Head:  # The two methods token_logprobs reads.

    def __init__(self, hidden, w):
      self.h, self.w = hidden, w

    def hidden(self, tokens, mask):
      del tokens, mask
      return self.h

    def output_embedding(self):
      return self.w

  def loss(hidden, w):
    tokens = jnp.zeros((b, t), jnp.int32)
    positions = jnp.ones((b, t), jnp.int32) if completion_only else None
    return logprobs.token_logprobs(
        Head(hidden, w), tokens, positions=positions, chunk_tokens=chunk_tokens
    ).sum()

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return grad.lower(hidden, w).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("completion_only", [False, True])
def test_head_memory_is_flat_in_the_batch(completion_only):
  vocab, t, chunk = 8192, 64, 256
  small, large = (_head_temp_bytes(b, chunk, completion_only) for b in (8, 64))
  block = chunk * vocab * 4  # One float32 logits chunk.
  # 8x the rows: the hidden states and their gradient grow (56 * 64 * 16 *
  # 4 bytes each), the logits do not; full [B, T, V] logits would be 128x
  # the block.
  assert large - small < block / 2, (small, large, block)
  assert large < 8 * block, (large, 64 * t * vocab * 4)
