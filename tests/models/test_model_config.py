"""Model configs: presets and the checks of `ModelConfig`."""

from flax import nnx
import jax
import pytest

from ugrad.models import model_config
from ugrad.models import transformer as tr


def test_presets():
  for name, size in (
      ("embedded", 0.53e6),
      ("embedded_small", 0.133e6),
      ("qwen2_2.9m", 2.9e6),
  ):
    cfg = model_config.preset(name, 20)
    params = nnx.state(
        nnx.eval_shape(lambda c=cfg: tr.Transformer(c, rngs=nnx.Rngs(0))),
        nnx.Param,
    )
    count = sum(x.size for x in jax.tree.leaves(params))
    assert abs(count - size) / size < 0.05, (name, count)
  cfg = model_config.preset("qwen2_2.9m", 20)
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias) == (2, 64, True)
  assert model_config.preset("embedded", 30, num_layers=3).num_layers == 3
  with pytest.raises(
      ValueError,
      match="valid: embedded, embedded_small, tiny, qwen2_2.9m, qwen2.5-0.5b",
  ):
    model_config.preset("gpt5", 20)


def _param_count(cfg) -> int:
  params = nnx.state(
      nnx.eval_shape(lambda: tr.Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param
  )
  return sum(x.size for x in jax.tree.leaves(params))


# Published parameter counts (the model cards / safetensors totals).
@pytest.mark.parametrize(
    "name, published, vocab",
    [
        ("qwen2.5-0.5b", 494_032_768, 151936),
        ("qwen2.5-1.5b", 1_543_714_304, 151936),
        ("qwen2.5-7b", 7_615_616_512, 151936),
        ("llama3.2-1b", 1_235_814_400, 128256),
        ("llama3.1-8b", 8_030_261_248, 128256),
    ],
)
def test_published_presets(name, published, vocab):
  cfg = model_config.preset(name, 151665 if vocab > 151665 else 128000)
  assert cfg.vocab_size == vocab  # the tokenizer's vocabulary is not used
  count = _param_count(cfg)  # eval_shape: nothing is allocated
  assert abs(count - published) / published < 0.01, (name, count)
  with pytest.raises(ValueError, match="fewer than the tokenizer"):
    model_config.preset(name, vocab + 1)


def test_published_shapes():
  q7 = model_config.preset("qwen2.5-7b", 100)
  assert (
      q7.num_heads,
      q7.num_kv_heads,
      q7.head_dim,
      q7.qkv_bias,
      q7.tie_embeddings,
  ) == (28, 4, 128, True, False)
  assert model_config.preset("qwen2.5-0.5b", 100).tie_embeddings
  l1 = model_config.preset("llama3.2-1b", 100)
  assert (l1.head_dim, l1.rope_theta, l1.qkv_bias, l1.tie_embeddings) == (
      64,
      500000.0,
      False,
      True,
  )
  assert not model_config.preset("llama3.1-8b", 100).tie_embeddings


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(hidden_size=30), "set head_dim"),
        (dict(head_dim=7), "even head_dim"),
        (dict(dtype="float33"), "not a dtype"),
        (
            dict(attention="flash"),
            "unknown attention 'flash'; valid: auto, einsum, xla, cudnn",
        ),
    ],
)
def test_config_errors(bad, match):
  fields = dict(
      vocab_size=24,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=48,
  )
  with pytest.raises(ValueError, match=match):
    model_config.ModelConfig(**(fields | bad))


def test_qwen_0_5b_matmul_params_and_flops_by_hand():
  cfg = model_config.preset("qwen2.5-0.5b", 32)
  d, f, layers, kv, dh = 896, 4864, 24, 2, 64
  per_layer = (
      d * d
      + d
      + 2 * (d * kv * dh + kv * dh)
      + d * d  # q, k, v, o
      + 3 * d * f
      + 2 * d
  )  # MLP, two norms
  total = layers * per_layer + 151936 * d + d  # Tied embedding; final norm.
  n = model_config.matmul_params(cfg, total)
  assert n == layers * per_layer + 151936 * d + d  # Tied: output counted.
  # The preset's own parameters: Qwen2.5-0.5B's published 494,032,768.
  model = nnx.eval_shape(lambda: tr.Transformer(cfg, rngs=nnx.Rngs(0)))
  real = sum(x.size for x in jax.tree.leaves(nnx.split(model, nnx.Param)[1]))
  assert model_config.matmul_params(cfg, real) == n == 494_032_768
  # An untied table is a lookup: not counted.
  untied = model_config.preset("qwen2.5-7b", 32)
  assert model_config.matmul_params(untied, 10**10) == (10**10 - 151936 * 3584)
  # A training step on 16 x 2,048 tokens: 6 N per token plus 12 L T H Dh of
  # attention.
  assert 3 * model_config.forward_flops(cfg, n, 16, 2048) == 16 * 2048 * (
      6 * n + 12 * layers * 2048 * 14 * dh
  )
