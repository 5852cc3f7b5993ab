"""LoRA adapters (ugrad/models/lora.py) on the transformer."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad import errors
from ugrad import models
from ugrad import sampling
from ugrad.models import logprobs
from ugrad.models import lora

V, PAD = 23, 0
CFG = models.ModelConfig(
    vocab_size=V,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    mlp_size=48,
    qkv_bias=True,
    tie_embeddings=False,
)
SPEC = lora.LoRASpec(rank=4, alpha=8.0)


def _adapted(spec=SPEC, seed=0):
  model = lora.adapted(models.Transformer, spec, seed)(CFG, rngs=nnx.Rngs(0))
  return nnx.split(model, nnx.Param)


def _trained(params, seed=1):
  """The adapters moved off zero, as training would."""
  base, adapters = lora.split(params)
  keys = iter(jax.random.split(jax.random.key(seed), 100))
  moved = jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), adapters
  )
  return lora.combine(base, moved)


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, V, (3, 9)), jnp.int32)
  mask = jnp.asarray(np.arange(9)[None] >= np.asarray([[0], [2], [4]]))
  return jnp.where(mask, tokens, PAD), mask.astype(jnp.int32)


def test_adapters_start_as_the_base_model_so_it_is_the_reference():
  graphdef, params = _adapted()
  plain = nnx.split(models.Transformer(CFG, rngs=nnx.Rngs(0)), nnx.Param)
  base, adapters = lora.split(params)
  # The base is the plain model's, bit for bit: no second copy is needed.
  jax.tree.map(
      np.testing.assert_array_equal,
      nnx.to_pure_dict(base),
      nnx.to_pure_dict(plain[1]),
  )
  assert {v.type for v in jax.tree.leaves(adapters, is_leaf=_is_var)} == {
      nnx.LoRAParam
  }
  assert len(jax.tree.leaves(adapters)) == 2 * 7 * CFG.num_layers
  tokens, mask = _batch()
  ref = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
  want = logprobs.token_logprobs(nnx.merge(*plain), tokens, mask)
  np.testing.assert_array_equal(ref, want)


def _is_var(x):
  return isinstance(x, nnx.Variable)


def test_merged_weights_give_the_adapted_models_logprobs():
  graphdef, params = _adapted()
  params = _trained(params)
  plain_graph = nnx.graphdef(models.Transformer(CFG, rngs=nnx.Rngs(0)))
  tokens, mask = _batch()
  adapted = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
  merged = nnx.merge(plain_graph, lora.merged(params, SPEC))
  base = nnx.merge(plain_graph, lora.split(params)[0])
  np.testing.assert_allclose(
      logprobs.token_logprobs(merged, tokens, mask), adapted, atol=1e-5
  )
  # The adapters do change the model.
  assert (
      np.abs(logprobs.token_logprobs(base, tokens, mask) - adapted).max() > 0.01
  )


def test_sampled_logprobs_equal_the_trainers_with_adapters():
  graphdef, params = _adapted()
  params = _trained(params)
  tokens, mask = _batch()
  config = sampling.SamplingConfig(
      max_new_tokens=6, eos_id=None, pad_id=PAD, temperature=1.0
  )
  out = sampling.sample(
      graphdef, params, tokens, mask, jax.random.key(3), config
  )
  recomputed = logprobs.token_logprobs(
      nnx.merge(graphdef, params), out.tokens, out.attention_mask
  )
  done = np.asarray(out.completion_mask, bool)
  np.testing.assert_allclose(
      np.asarray(out.logp)[done], np.asarray(recomputed)[done], atol=1e-5
  )


def test_adapters_carry_the_kernels_logical_axes():
  _, params = _adapted()
  _, adapters = lora.split(params)
  flat = dict(nnx.to_flat_state(adapters))
  q_a = flat[("layers", 0, "self_attn", "q_proj", "lora", "a")]
  q_b = flat[("layers", 0, "self_attn", "q_proj", "lora", "b")]
  down_b = flat[("layers", 1, "mlp", "down_proj", "lora", "b")]
  assert q_a.get_metadata()["logical_axes"] == ("embed", None)
  assert q_b.get_metadata()["logical_axes"] == (None, "heads")
  assert down_b.get_metadata()["logical_axes"] == (None, "embed")


def test_scan_layers_gives_the_unrolled_logprobs():
  graphdef, params = _adapted()
  params = _trained(params)
  scanned = lora.adapted(models.Transformer, SPEC, 0)(
      dataclasses.replace(CFG, scan_layers=True), rngs=nnx.Rngs(0)
  )
  tokens, mask = _batch()
  want = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
  nnx.update(scanned, params)
  np.testing.assert_allclose(
      logprobs.token_logprobs(scanned, tokens, mask), want, atol=1e-6
  )


def test_a_pattern_that_matches_nothing_lists_the_module_paths():
  with pytest.raises(errors.UserError) as err:
    _adapted(lora.LoRASpec(rank=4, alpha=8.0, targets="attn/qq_proj"))
  assert "matches no module" in str(err.value)
  assert "layers/1/self_attn/q_proj" in str(err.value)
  assert "lm_head" in str(err.value)


def test_only_matching_paths_get_adapters():
  _, params = _adapted(lora.LoRASpec(rank=2, alpha=2.0, targets=r"lm_head$"))
  _, adapters = lora.split(params)
  assert list(nnx.to_pure_dict(adapters)) == ["lm_head"]


@pytest.mark.parametrize(
    "rank, alpha, message",
    [(0, 1.0, "lora.rank must be > 0"), (4, 0.0, "lora.alpha must be > 0")],
)
def test_bad_rank_or_alpha_is_one_line(rank, alpha, message):
  with pytest.raises(errors.UserError, match=message):
    lora.LoRASpec(rank=rank, alpha=alpha)


@pytest.mark.slow
def test_dropout_runs_only_with_seeds_and_is_set_by_them():
  spec = dataclasses.replace(SPEC, dropout=0.5)
  graphdef, params = _adapted(spec)
  params = _trained(params)
  tokens, mask = _batch()

  def logp(seeds, rows=slice(None), config=CFG):
    graph = graphdef
    if config is not CFG:
      graph = nnx.graphdef(
          lora.adapted(models.Transformer, spec, 0)(config, rngs=nnx.Rngs(0))
      )
    model = nnx.merge(graph, params)
    if seeds is not None:
      lora.use_dropout(model, jnp.asarray(seeds, jnp.int32)[rows])
    return np.asarray(logprobs.token_logprobs(model, tokens[rows], mask[rows]))

  plain = logp(None)
  no_dropout = nnx.merge(_adapted()[0], params)  # The same model, rate 0.
  np.testing.assert_array_equal(
      plain, logprobs.token_logprobs(no_dropout, tokens, mask)
  )
  dropped = logp([1, 2, 3])
  assert np.abs(dropped - plain).max(1).min() > 1e-3  # Every row.
  np.testing.assert_array_equal(dropped, logp([1, 2, 3]))
  # A row's masks are its seed's: another seed changes that row alone,
  # and a micro-batch of the first two rows draws what they drew.
  other = logp([1, 2, 4])
  np.testing.assert_array_equal(other[:2], dropped[:2])
  assert np.abs(other[2] - dropped[2]).max() > 1e-3
  np.testing.assert_allclose(
      logp([1, 2, 3], slice(0, 2)), dropped[:2], atol=1e-6
  )
  # The scanned layers draw each layer's masks as the unrolled ones do.
  np.testing.assert_allclose(
      logp([1, 2, 3], config=dataclasses.replace(CFG, scan_layers=True)),
      dropped,
      atol=1e-5,
  )
