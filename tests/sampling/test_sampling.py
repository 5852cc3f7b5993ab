"""The KV-cache sampler against the full no-cache forward."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad import sampling
from ugrad.sampling import layout
from ugrad.sampling import sampler as sampler_lib
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

V, PAD = 20, 0
# One config and fixed shapes for the whole file: each compiles once.
CFG = model_config.ModelConfig(
    vocab_size=V,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    mlp_size=48,
    qkv_bias=True,
    tie_embeddings=False,
)
GREEDY = sampling.SamplingConfig(
    max_new_tokens=6, eos_id=None, pad_id=PAD, temperature=0.0
)


@pytest.fixture(scope="module")
def model():
  m = tr.Transformer(CFG, rngs=nnx.Rngs(0))
  # Weights 5x the 0.02 init: next-token entropy about 1.3 nats, so greedy
  # completions vary and samples differ without being uniform noise.
  params = nnx.state(m, nnx.Param)
  nnx.update(m, jax.tree.map(lambda x: x * 5.0, params))
  return m


@jax.jit
def _jit_logits(params, tokens, mask):
  return nnx.merge(_GRAPHDEF, params)(tokens, mask)


@jax.jit
def _jit_logprobs(params, tokens, mask):
  return logprobs.token_logprobs(nnx.merge(_GRAPHDEF, params), tokens, mask)


_GRAPHDEF = nnx.graphdef(tr.Transformer(CFG, rngs=nnx.Rngs(0)))


def _logits(model, tokens, mask):
  return _jit_logits(nnx.state(model, nnx.Param), tokens, mask)


def _logprobs(model, tokens, mask):
  return _jit_logprobs(nnx.state(model, nnx.Param), tokens, mask)


def _prompts(lengths, width, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, (len(lengths), width))
  mask = np.arange(width)[None, :] >= width - np.asarray(lengths)[:, None]
  return (
      jnp.asarray(np.where(mask, tokens, PAD), jnp.int32),
      jnp.asarray(mask, jnp.int32),
  )


def _sample(model, tokens, mask, config, seed=0):
  graphdef, params = nnx.split(model, nnx.Param)
  return sampling.sample(
      graphdef, params, tokens, mask, jax.random.key(seed), config
  )


@pytest.mark.slow
def test_greedy_equals_repeated_argmax_of_full_forward(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  out = _sample(model, tokens, mask, GREEDY)
  seq, seq_mask = tokens, mask
  for _ in range(GREEDY.max_new_tokens):
    nxt = jnp.argmax(_logits(model, seq, seq_mask)[:, -1], axis=-1)[:, None]
    seq = jnp.concatenate([seq, nxt.astype(jnp.int32)], axis=1)
    seq_mask = jnp.pad(seq_mask, ((0, 0), (0, 1)), constant_values=1)
  np.testing.assert_array_equal(out.tokens, seq)
  np.testing.assert_array_equal(out.attention_mask, seq_mask)
  np.testing.assert_array_equal(out.completion_mask[:, 7:], 1)
  np.testing.assert_array_equal(out.completion_mask[:, :7], 0)
  np.testing.assert_array_equal(out.lengths, 6)
  assert len(set(np.asarray(out.tokens[:, 7:]).ravel().tolist())) > 2


@pytest.mark.parametrize("layout", tr.CACHE_LAYOUTS)
def test_cached_logits_match_uncached(model, layout):
  tokens, mask = _prompts([6, 3], 6)
  extra = jnp.asarray([[3, 4, 5], [7, 8, 9]], jnp.int32)
  full = jnp.concatenate([tokens, extra], axis=1)
  full_mask = jnp.pad(mask, ((0, 0), (0, 3)), constant_values=1)
  expected = _logits(model, full, full_mask)
  positions = tr.positions_from_mask(full_mask)
  cache = tr.init_cache(CFG, 2, 9, layout)
  h, cache = model.hidden_cached(tokens, positions[:, :6], full_mask, cache, 0)
  got = [model.logits(h)]
  for i in range(6, 9):
    h, cache = model.hidden_cached(
        full[:, i : i + 1], positions[:, i : i + 1], full_mask, cache, i
    )
    got.append(model.logits(h))
  got = jnp.concatenate(got, axis=1)
  real = np.asarray(full_mask, bool)
  np.testing.assert_allclose(
      np.asarray(got)[real], np.asarray(expected)[real], atol=1e-4, rtol=1e-5
  )


def test_sampled_logp_equals_recomputed_logprobs_at_temperature_1(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  config = dataclasses.replace(GREEDY, temperature=1.0, num_samples=2)
  out = _sample(model, tokens, mask, config, seed=3)
  recomputed = _logprobs(model, out.tokens, out.attention_mask)
  done = np.asarray(out.completion_mask, bool)
  np.testing.assert_allclose(
      np.asarray(out.logp)[done], np.asarray(recomputed)[done], atol=1e-4
  )
  np.testing.assert_array_equal(np.asarray(out.logp)[~done], 0.0)


@jax.jit
def _jit_logprobs_at_07(params, tokens, mask):
  return logprobs.token_logprobs(
      nnx.merge(_GRAPHDEF, params), tokens, mask, temperature=0.7
  )


def test_sampled_logp_equals_the_trainers_logprobs_at_temperature_07(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  config = dataclasses.replace(GREEDY, temperature=0.7, num_samples=2)
  out = _sample(model, tokens, mask, config, seed=3)
  params = nnx.state(model, nnx.Param)
  done = np.asarray(out.completion_mask, bool)
  tempered = np.asarray(
      _jit_logprobs_at_07(params, out.tokens, out.attention_mask)
  )[done]
  # The decode step's [B, 1] logits and the trainer's [B, T] ones round
  # differently by CPU: 1.2e-5 apart at most on a 2-core AMD EPYC.
  np.testing.assert_allclose(np.asarray(out.logp)[done], tempered, atol=3e-5)
  # The untempered policy's log-probs are not the sampled distribution's.
  plain = np.asarray(_logprobs(model, out.tokens, out.attention_mask))[done]
  assert np.abs(plain - tempered).mean() > 0.05


def test_rows_are_prompt_major(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  config = dataclasses.replace(GREEDY, temperature=1.0, num_samples=2)
  out = _sample(model, tokens, mask, config, seed=3)
  np.testing.assert_array_equal(out.tokens[:, :7], np.repeat(tokens, 2, 0))
  np.testing.assert_array_equal(
      out.attention_mask[:, :7], np.repeat(mask, 2, 0)
  )
  # Two samples of one prompt differ somewhere (temperature 1, 6 tokens).
  assert any(
      not np.array_equal(out.tokens[2 * b, 7:], out.tokens[2 * b + 1, 7:])
      for b in range(3)
  )


def test_eos_stops_a_row_and_pads_after_it(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  free = np.asarray(_sample(model, tokens, mask, GREEDY).tokens[:, 7:])
  eos = int(free[0, 2])  # Row 0 emits it at step 2 at the latest.
  out = _sample(model, tokens, mask, dataclasses.replace(GREEDY, eos_id=eos))
  for row in range(3):
    hits = np.flatnonzero(free[row] == eos)
    n = hits[0] + 1 if hits.size else 6
    completion = np.asarray(out.tokens[row, 7:])
    np.testing.assert_array_equal(completion[:n], free[row, :n])
    np.testing.assert_array_equal(completion[n:], PAD)
    np.testing.assert_array_equal(
        out.completion_mask[row, 7:], np.arange(6) < n
    )
    np.testing.assert_array_equal(out.attention_mask[row, 7:], np.arange(6) < n)
    assert out.lengths[row] == n
  assert out.lengths[0] <= 3


def test_every_row_done_stops_early_with_padding(model):
  tokens, mask = _prompts([4], 7)
  first = int(_sample(model, tokens, mask, GREEDY).tokens[0, 7])
  out = _sample(model, tokens, mask, dataclasses.replace(GREEDY, eos_id=first))
  np.testing.assert_array_equal(out.tokens[0, 7:], [first] + [PAD] * 5)
  assert int(out.lengths[0]) == 1


def test_top_k_1_equals_greedy(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  greedy = _sample(model, tokens, mask, GREEDY)
  top1 = _sample(
      model,
      tokens,
      mask,
      dataclasses.replace(GREEDY, temperature=1.0, top_k=1),
      seed=9,
  )
  np.testing.assert_array_equal(top1.tokens, greedy.tokens)
  np.testing.assert_array_equal(top1.logp, 0.0)  # A point mass.


@pytest.mark.parametrize("truncation", [dict(top_k=3), dict(top_p=0.6)])
def test_truncated_sampling_stays_in_the_set_and_reports_its_logp(
    model, truncation
):
  tokens, mask = _prompts([5, 2, 7], 7)
  config = dataclasses.replace(
      GREEDY, temperature=0.7, num_samples=4, **truncation
  )
  out = _sample(model, tokens, mask, config, seed=1)
  # [R, N, V]: the distributions the N completion tokens were drawn from.
  logits = _logits(model, out.tokens, out.attention_mask)[:, 6:-1] / 0.7
  kept = sampling.truncate_logits(
      logits.reshape(-1, V), config.top_k, config.top_p
  ).reshape(logits.shape)
  expected = jnp.take_along_axis(
      jax.nn.log_softmax(kept, -1), out.tokens[:, 7:, None], -1
  )[..., 0]
  assert np.all(np.isfinite(np.asarray(expected)))  # Sampled tokens kept.
  np.testing.assert_allclose(out.logp[:, 7:], expected, atol=1e-4)
  n_kept = np.sum(np.isfinite(np.asarray(kept)), axis=-1)
  if "top_k" in truncation:
    np.testing.assert_array_equal(n_kept, 3)
  else:
    assert n_kept.min() >= 1 and n_kept.max() < V


def test_truncate_on_known_logits():
  logits = jnp.log(jnp.asarray([[0.5, 0.05, 0.3, 0.15]]))
  kept = lambda **kw: np.isfinite(
      np.asarray(
          sampling.truncate_logits(logits, kw.get("top_k"), kw.get("top_p"))
      )
  )[0].tolist()
  assert kept(top_k=2) == [True, False, True, False]
  assert kept(top_p=0.5) == [True, False, False, False]
  assert kept(top_p=0.6) == [True, False, True, False]
  assert kept(top_p=0.85) == [True, False, True, True]
  assert kept(top_k=2, top_p=0.99) == [True, False, True, False]


def test_deterministic_given_the_key(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  config = dataclasses.replace(GREEDY, temperature=1.0, num_samples=2)
  a = _sample(model, tokens, mask, config, seed=5)
  b = _sample(model, tokens, mask, config, seed=5)
  c = _sample(model, tokens, mask, config, seed=6)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logp, b.logp)
  assert not np.array_equal(a.tokens, c.tokens)


@pytest.mark.slow
def test_ragged_prompts_match_each_prompt_alone(model):
  tokens, mask = _prompts([5, 2, 7], 7)
  batch = _sample(model, tokens, mask, GREEDY)
  lp = _logprobs(model, batch.tokens, batch.attention_mask)
  for row, n in enumerate([5, 2, 7]):
    alone_prompt = tokens[row : row + 1, 7 - n :]
    alone = _sample(model, alone_prompt, jnp.ones_like(alone_prompt), GREEDY)
    np.testing.assert_array_equal(alone.tokens[0, n:], batch.tokens[row, 7:])
    alone_lp = _logprobs(model, alone.tokens, alone.attention_mask)
    np.testing.assert_allclose(alone_lp[0, n:], lp[row, 7:], atol=1e-4)


def test_compiles_once_per_shape(model, monkeypatch):
  traces = []
  choose = sampler_lib.choose_tokens

  def counting_choose(*args):
    traces.append(1)
    return choose(*args)

  monkeypatch.setattr(sampler_lib, "choose_tokens", counting_choose)
  config = dataclasses.replace(GREEDY, max_new_tokens=3)  # Shapes of its own.
  tokens, mask = _prompts([4, 1], 5)
  graphdef, params = nnx.split(model, nnx.Param)
  sampling.sample(graphdef, params, tokens, mask, jax.random.key(0), config)
  first = len(traces)
  assert first > 0
  other_tokens, other_mask = _prompts([2, 5], 5, seed=1)
  other_params = jax.tree.map(lambda x: x * 0.5, params)
  sampling.sample(
      graphdef,
      other_params,
      other_tokens,
      other_mask,
      jax.random.key(1),
      config,
  )
  assert len(traces) == first


def test_bad_input_is_refused(model):
  tokens, mask = _prompts([5, 2], 7)
  graphdef, params = nnx.split(model, nnx.Param)
  right_padded = jnp.asarray(mask[:, ::-1])
  with pytest.raises(ValueError, match=r"left-padded.*rows \[0, 1\]"):
    sampling.sample(
        graphdef, params, tokens, right_padded, jax.random.key(0), GREEDY
    )
  with pytest.raises(ValueError, match="must both be"):
    sampling.sample(
        graphdef, params, tokens, mask[:, 1:], jax.random.key(0), GREEDY
    )
  for bad, match in [
      (dict(top_p=0.0), "top_p"),
      (dict(top_k=0), "top_k"),
      (dict(temperature=-1.0), "temperature"),
      (dict(max_new_tokens=0), "max_new_tokens"),
      (dict(cache_layout="bsdh"), "valid: bhsd, bshd"),
  ]:
    with pytest.raises(ValueError, match=match):
      dataclasses.replace(GREEDY, **bad)


def test_weights_cast_once_per_call_sample_the_same(model):
  """A bfloat16-compute model with float32 masters samples exactly as with
  its weights cast to bfloat16 beforehand: the sampler's one cast before
  the decode loop changes no value."""
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  m = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(m, nnx.Param)
  params = jax.tree.map(lambda x: x * 5.0, params)
  cast = sampler_lib.in_compute_dtype(graphdef, params)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  assert {x.dtype for x in jax.tree.leaves(cast)} == {jnp.dtype("bfloat16")}
  tokens, mask = _prompts([3, 5], 6)
  config = dataclasses.replace(GREEDY, temperature=1.0)
  key = jax.random.key(3)
  a = sampling.sample(graphdef, params, tokens, mask, key, config)
  b = sampling.sample(graphdef, cast, tokens, mask, key, config)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logp, b.logp)


def test_kv_phases():
  assert layout.kv_phases(512, 1024, 256) == (768, 1024, 1280, 1536)
  assert layout.kv_phases(7, 20, 8) == (8, 16, 24, 27)
  assert layout.kv_phases(16, 8, 8) == (24,)  # Step 0 writes slot 16.
  assert layout.kv_phases(5, 3, 256) == (8,)
  assert layout.kv_phases(512, 1024, None) == (1536,)
  with pytest.raises(ValueError, match="kv_block must be >= 1"):
    dataclasses.replace(GREEDY, kv_block=0)


@pytest.mark.parametrize("cache_layout", tr.CACHE_LAYOUTS)
def test_attention_over_a_phase_equals_over_all_slots(model, cache_layout):
  """Decode steps over the cache's first 12 slots (their phase) give the
  values and cache writes of the same steps over all 20: the slots left
  out are not written yet, so masked."""
  tokens, mask = _prompts([6, 3], 6)
  kv_mask = jnp.pad(mask, ((0, 0), (0, 14)), constant_values=1)
  positions = tr.positions_from_mask(mask)
  full = tr.init_cache(CFG, 2, 20, cache_layout)
  _, full = model.hidden_cached(tokens, positions, kv_mask, full, 0)
  phase = layout.grow_cache(tr.init_cache(CFG, 2, 6, cache_layout), 12)
  _, phase = model.hidden_cached(tokens, positions, kv_mask[:, :12], phase, 0)
  token = jnp.asarray([[3], [7]], jnp.int32)
  for i in range(6, 12):
    pos = positions[:, -1:] + i - 5
    h_full, full = model.hidden_cached(token, pos, kv_mask, full, i)
    h, phase = model.hidden_cached(token, pos, kv_mask[:, :12], phase, i)
    np.testing.assert_allclose(h, h_full, rtol=1e-4, atol=1e-4)
    token = jnp.argmax(model.logits(h), axis=-1).astype(jnp.int32)
  # The real slots hold the same keys and values (a left-padding slot's
  # differ from the second layer on: its query sees no key, so it averages
  # over all slots; no real query reads it).
  real = np.asarray(kv_mask[:, :12], bool)
  for a, b in zip(jax.tree.leaves(phase), jax.tree.leaves(full)):
    a, b = (
        np.asarray(a),
        np.asarray(b)[..., :12, :]
        if cache_layout == "bhsd"
        else np.asarray(b)[:, :12],
    )
    if cache_layout == "bhsd":
      a, b = a.transpose(0, 2, 1, 3), b.transpose(0, 2, 1, 3)
    np.testing.assert_allclose(a[real], b[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache_layout", tr.CACHE_LAYOUTS)
def test_decode_phases_sample_as_one_loop(model, cache_layout):
  """The decode loop in phases of 8 slots (8, 16, 24, 27) samples the
  tokens and log-probs of one loop over all 27 slots."""
  tokens, mask = _prompts([5, 2, 7], 7)
  one = dataclasses.replace(
      GREEDY,
      max_new_tokens=20,
      temperature=1.0,
      num_samples=2,
      eos_id=3,
      kv_block=None,
      cache_layout=cache_layout,
  )
  phased = dataclasses.replace(one, kv_block=8)
  a = _sample(model, tokens, mask, one, seed=5)
  b = _sample(model, tokens, mask, phased, seed=5)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.completion_mask, b.completion_mask)
  np.testing.assert_allclose(a.logp, b.logp, rtol=1e-4, atol=1e-4)
  assert np.asarray(a.lengths).max() > 8  # The rows cross phases.


@pytest.mark.parametrize("vocab", [26, 151936])
def test_one_pass_draw_is_categorical_with_its_exact_log_prob(vocab):
  """`draw` (one reduction over the vocabulary) picks jax.random.categorical's
  tokens, and its log-probs are as close to float64's as log_softmax's,
  with a third of the vocabulary cut to -inf (top-k) or not."""
  rng = np.random.default_rng(vocab)
  x = rng.normal(size=(16, vocab)) * 3
  x[8:, : vocab // 3] = -np.inf
  x = jnp.asarray(x, jnp.float32)
  key = jax.random.key(7)
  token, logp = jax.jit(sampler_lib.draw)(x, key)
  np.testing.assert_array_equal(token, jax.random.categorical(key, x))
  wide = np.asarray(x, np.float64)
  top = wide.max(axis=1, keepdims=True)
  exact = wide[np.arange(16), token] - (
      np.log(np.exp(wide - top).sum(axis=1)) + top[:, 0]
  )
  two_pass = jnp.take_along_axis(
      jax.nn.log_softmax(x), token[:, None], axis=-1
  )[:, 0]
  error = np.abs(np.asarray(logp) - exact).max()
  assert error <= max(2 * np.abs(np.asarray(two_pass) - exact).max(), 1e-6)
