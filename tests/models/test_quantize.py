"""The quantized frozen base (ugrad/models/quantize.py) under LoRA."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from qwix._src.core import numerics

from ugrad import models
from ugrad.models import logprobs
from ugrad.models import lora
from ugrad.models import quantize

V = 64
CFG = models.ModelConfig(
    vocab_size=V,
    hidden_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    mlp_size=256,
    qkv_bias=True,
    tie_embeddings=False,
)


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, V, (3, 12)), jnp.int32)
  mask = jnp.asarray(np.arange(12)[None] >= np.asarray([[0], [2], [4]]))
  return jnp.where(mask, tokens, 0), mask.astype(jnp.int32)


def _adapted(base_dtype, targets=lora.DEFAULT_TARGETS, cfg=CFG):
  spec = lora.LoRASpec(4, 8.0, targets, base_dtype=base_dtype)
  model = lora.adapted(models.Transformer, spec, 0)(cfg, rngs=nnx.Rngs(0))
  return spec, *nnx.split(model, nnx.Param)


def _moved(params, seed=1):
  base, adapters = lora.split(params)
  keys = iter(jax.random.split(jax.random.key(seed), 100))
  adapters = jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), adapters
  )
  return lora.combine(base, adapters)


# Relative Frobenius error of a N(0, 0.02) [256, 512] kernel (measured:
# int8 0.0082, nf4 0.092, the nf4 figure of QLoRA's Gaussian weights).
@pytest.mark.parametrize("base_dtype, bound", [("int8", 0.01), ("nf4", 0.1)])
def test_quantized_kernels_are_within_a_stated_error(base_dtype, bound):
  w = 0.02 * jax.random.normal(jax.random.key(0), (256, 512))
  q = quantize.quantize(w, base_dtype)
  back = quantize.dequantize(q.qvalue, q.scale, jnp.float32)
  error = float(jnp.linalg.norm(back - w) / jnp.linalg.norm(w))
  assert 0 < error < bound
  # One scale per output column (int8) or per 64 inputs of one (nf4).
  assert q.scale.shape == {"int8": (1, 512), "nf4": (4, 512)}[base_dtype]


@pytest.mark.parametrize("base_dtype", ["int8", "nf4"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dequantize_equals_qwix(base_dtype, dtype):
  """ugrad's elementwise nf4 dequantization (fusible into the matmul) gives
  qwix's values bit for bit; int8 is qwix's own."""
  w = 0.02 * jax.random.normal(jax.random.key(0), (256, 512))
  q = quantize.quantize(w, base_dtype)
  qtype = {"int8": jnp.int8, "nf4": "nf4"}[base_dtype]
  want = qwix.dequantize(
      qwix.QArray(q.qvalue, q.scale.astype(dtype), None, qtype)
  )
  got = quantize.dequantize(q.qvalue, q.scale, dtype)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_array_equal(
      np.asarray(got, np.float32), np.asarray(want, np.float32)
  )
  assert quantize.NF4_LEVELS == tuple(
      float(x) for x in numerics.get_nf4_buckets()
  )


def test_nf4_is_stored_in_half_a_byte_per_weight():
  w = 0.02 * jax.random.normal(jax.random.key(0), (1024, 1024))
  compiled = jax.jit(lambda w: quantize.quantize(w, "nf4")).lower(w).compile()
  # uint4 values packed two a byte, one float32 scale per 64 weights.
  assert compiled.memory_analysis().output_size_in_bytes <= (
      1024 * 1024 // 2 + 4 * 1024 * 1024 // 64 + 64
  )


@pytest.mark.slow
@pytest.mark.parametrize("base_dtype", ["int8", "nf4"])
def test_reference_and_merged_use_the_dequantized_base(base_dtype):
  spec, graphdef, params = _adapted(base_dtype)
  plain_graph = nnx.graphdef(models.Transformer(CFG, rngs=nnx.Rngs(0)))
  tokens, mask = _batch()
  base, _ = lora.split(params)
  # Fresh adapters over the quantized base: the plain model on the
  # dequantized kernels (the reference of a QLoRA run).
  np.testing.assert_allclose(
      logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask),
      logprobs.token_logprobs(
          nnx.merge(plain_graph, quantize.dequantized(base)), tokens, mask
      ),
      atol=1e-6,
  )
  params = _moved(params)
  adapted = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
  merged = nnx.merge(plain_graph, lora.merged(params, spec))
  np.testing.assert_allclose(
      logprobs.token_logprobs(merged, tokens, mask), adapted, atol=1e-5
  )


@pytest.mark.slow
def test_adapter_gradients_match_the_dequantized_model():
  _, graphdef, params = _adapted("nf4")
  params = _moved(params)
  base, adapters = lora.split(params)
  plain = quantize.dequantized(base)
  _, plain_graph, _ = _adapted("")
  tokens, mask = _batch()

  def loss(graph, frozen):
    return lambda a: logprobs.token_logprobs(
        nnx.merge(graph, lora.combine(frozen, a)), tokens, mask
    ).sum()

  got = jax.grad(loss(graphdef, base))(adapters)
  want = jax.grad(loss(plain_graph, plain))(adapters)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      nnx.to_pure_dict(got),
      nnx.to_pure_dict(want),
  )


def test_a_bfloat16_base_computes_as_the_float32_one_in_bfloat16():
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  tokens, mask = _batch()
  outs = []
  for base_dtype in ("", "bfloat16"):
    _, graphdef, params = _adapted(base_dtype, cfg=cfg)
    outs.append(
        logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
    )
  np.testing.assert_array_equal(outs[0], outs[1])


def test_adapters_on_lm_head_change_the_logits():
  spec, graphdef, params = _adapted("nf4", targets=r"lm_head$")
  params = _moved(params)
  tokens, mask = _batch()
  base, _ = lora.split(params)
  plain_graph = nnx.graphdef(models.Transformer(CFG, rngs=nnx.Rngs(0)))
  adapted = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)
  unadapted = logprobs.token_logprobs(
      nnx.merge(plain_graph, quantize.dequantized(base)), tokens, mask
  )
  assert np.abs(adapted - unadapted).max() > 1e-3
  merged = nnx.merge(plain_graph, lora.merged(params, spec))
  np.testing.assert_allclose(
      logprobs.token_logprobs(merged, tokens, mask), adapted, atol=1e-5
  )


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["full", "dots"])
def test_adapter_gradients_under_remat_with_the_base_outside_the_trace(remat):
  """As the update takes them: the base a jit argument, the gradient over
  the adapters alone (nnx.remat failed here: a Param of another trace)."""
  cfg = dataclasses.replace(CFG, num_layers=1, remat=remat)
  _, graphdef, params = _adapted("nf4", cfg=cfg)
  base, adapters = lora.split(_moved(params))
  tokens, mask = _batch()

  @jax.jit
  def grads(adapters, base):
    return jax.grad(
        lambda a: logprobs.token_logprobs(
            nnx.merge(graphdef, lora.combine(base, a)), tokens, mask
        ).sum()
    )(adapters)

  _, plain_graph, _ = _adapted(
      "nf4", cfg=dataclasses.replace(cfg, remat="none")
  )
  want = jax.grad(
      lambda a: logprobs.token_logprobs(
          nnx.merge(plain_graph, lora.combine(base, a)), tokens, mask
      ).sum()
  )(adapters)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
      nnx.to_pure_dict(grads(adapters, base)),
      nnx.to_pure_dict(want),
  )
