"""Decoder shapes and numerics (`ModelConfig`), and named presets of them."""

import dataclasses
from typing import Callable, Optional

import jax.numpy as jnp

from ugrad import errors
from ugrad import registry

# Attention kernels of training and prefill (`ModelConfig.attention`):
# "einsum", ugrad's own grouped einsums; "xla" and "cudnn" (flash attention
# on NVIDIA GPUs in bfloat16 / float16), implementations of
# `jax.nn.dot_product_attention`; "splash", Pallas splash attention (flash
# attention on TPUs); "auto", splash on a TPU, cudnn on a GPU where it
# applies, else einsum. See `ugrad.models.attention`.
ATTENTION = ("auto", "einsum", "xla", "cudnn", "splash")
# `remat` names: the policies of `layer_stack.REMAT_POLICIES` and "auto".
REMAT = ("auto", "none", "full", "dots", "dots_all")


def wide(dtype) -> jnp.dtype:
  """The dtype of precision-sensitive math: float32, or float64 if wider."""
  return jnp.promote_types(dtype, jnp.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shape and numerics of a decoder (field names follow the HF configs).

  Attributes:
    vocab_size: V.
    hidden_size: D, the residual width.
    num_layers: number of decoder layers.
    num_heads: H, query heads.
    num_kv_heads: Hkv, key/value heads (grouped-query attention); divides H.
    head_dim: Dh; None means hidden_size // num_heads.
    mlp_size: F, the SwiGLU inner width.
    rope_theta: rotary embedding base.
    rms_eps: RMSNorm epsilon.
    qkv_bias: biases on q/k/v projections (Qwen2).
    tie_embeddings: the output projection is the input embedding transposed.
    dtype: compute dtype name ("float32", "bfloat16").
    param_dtype: parameter dtype name.
    remat: activation memory of the backward pass: "none" (keep every
      activation), "full" (recompute each decoder layer), "dots" (keep the
      projections' and MLP's matmul outputs, recompute the rest),
      "dots_all" (keep every matmul output, attention's included) or
      "auto" (full on a TPU or GPU, none on a CPU); see
      `transformer.REMAT_POLICIES` and `layer_stack.remat_policy`.
    attention: the attention kernel of training and prefill, one of
      `ATTENTION` (decoding one token at a time keeps its own einsums).
    scan_layers: training's and the log-prob passes' decoder layers run as
      one `lax.scan` (compiled once, not once per layer; the same numbers).
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: Optional[int] = None
  mlp_size: int
  rope_theta: float = 10000.0
  rms_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  attention: str = "auto"
  scan_layers: bool = False

  def __post_init__(self):
    registry.lookup(ATTENTION, "attention", self.attention)
    registry.lookup(REMAT, "remat", self.remat)
    if self.num_heads % self.num_kv_heads:
      raise errors.UserError(
          f"num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}"
      )
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise errors.UserError(
            f"hidden_size={self.hidden_size} is not a multiple "
            f"of num_heads={self.num_heads}; set head_dim"
        )
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.head_dim % 2:
      raise errors.UserError(
          f"rotary embeddings need an even head_dim, got " f"{self.head_dim}"
      )
    for field in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, field))
      except TypeError as e:
        raise errors.UserError(
            f"{field}={getattr(self, field)!r} is not a dtype " "name"
        ) from e


def _embedded(vocab_size: int) -> ModelConfig:
  return ModelConfig(
      vocab_size=vocab_size,
      hidden_size=128,
      num_layers=2,
      num_heads=4,
      num_kv_heads=4,
      mlp_size=512,
  )


def _embedded_small(vocab_size: int) -> ModelConfig:
  """The embedded shape at half the width (about a quarter of its
  parameters): a student for distillation from an `embedded` teacher."""
  return ModelConfig(
      vocab_size=vocab_size,
      hidden_size=64,
      num_layers=2,
      num_heads=4,
      num_kv_heads=4,
      mlp_size=256,
  )


def _qwen2_2_9m(vocab_size: int) -> ModelConfig:
  return ModelConfig(
      vocab_size=vocab_size,
      hidden_size=256,
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=688,
      qkv_bias=True,
      rope_theta=1000000.0,
  )


# Model shapes by name; each takes the tokenizer's vocabulary size (the
# published models' presets below keep their own and only check it).
def _tiny(vocab_size: int) -> ModelConfig:
  """One small layer: for smoke tests, where compile time dominates."""
  return ModelConfig(
      vocab_size=vocab_size,
      hidden_size=32,
      num_layers=1,
      num_heads=2,
      num_kv_heads=1,
      mlp_size=64,
  )


def _published(name: str, vocab: int, **fields) -> Callable[[int], ModelConfig]:
  """A preset with the shapes of a published model.

  Its vocabulary is the model's own (the embedding has `vocab` rows whatever
  the tokenizer): the tokenizer's `vocab_size` is only checked to fit in it,
  as the real tokenizers are smaller than their embeddings (Qwen2.5's has
  151,665 tokens for 151,936 rows).
  """

  def make(vocab_size: int) -> ModelConfig:
    if vocab_size > vocab:
      raise errors.UserError(
          f"model preset {name!r} has {vocab} embedding rows, "
          f"fewer than the tokenizer's {vocab_size} tokens"
      )
    return ModelConfig(vocab_size=vocab, **fields)

  make.__doc__ = f"The shapes of {name} (vocabulary fixed at {vocab})."
  return make


# Shapes of published models (their Hugging Face config.json). Llama 3's
# "llama3" rope scaling is not implemented: the shapes, parameter counts and
# memory plans are exact, the rotary frequencies of loaded weights are not.
_QWEN25 = dict(rope_theta=1000000.0, rms_eps=1e-6, qkv_bias=True)
_LLAMA3 = dict(rope_theta=500000.0, rms_eps=1e-5, qkv_bias=False)

PRESETS: dict[str, Callable[[int], ModelConfig]] = {
    "embedded": _embedded,
    "embedded_small": _embedded_small,
    "tiny": _tiny,
    "qwen2_2.9m": _qwen2_2_9m,
    "qwen2.5-0.5b": _published(
        "qwen2.5-0.5b",
        151936,
        hidden_size=896,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        head_dim=64,
        mlp_size=4864,
        tie_embeddings=True,
        **_QWEN25,
    ),
    "qwen2.5-1.5b": _published(
        "qwen2.5-1.5b",
        151936,
        hidden_size=1536,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        head_dim=128,
        mlp_size=8960,
        tie_embeddings=True,
        **_QWEN25,
    ),
    "qwen2.5-7b": _published(
        "qwen2.5-7b",
        151936,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        mlp_size=18944,
        tie_embeddings=False,
        **_QWEN25,
    ),
    "llama3.2-1b": _published(
        "llama3.2-1b",
        128256,
        hidden_size=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        mlp_size=8192,
        tie_embeddings=True,
        **_LLAMA3,
    ),
    "llama3.1-8b": _published(
        "llama3.1-8b",
        128256,
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_size=14336,
        tie_embeddings=False,
        **_LLAMA3,
    ),
}


def matmul_params(config: ModelConfig, total: int) -> int:
  """N, the parameters a token's forward pass multiplies by: all `total`
  parameters but an untied input embedding table (a lookup); a tied one is
  the output projection and counts."""
  lookup = (
      0 if config.tie_embeddings else (config.vocab_size * config.hidden_size)
  )
  return int(total - lookup)


def forward_flops(config: ModelConfig, n: int, rows: int, length: int) -> float:
  """Model FLOPs of one forward pass over rows x length tokens: 2 N per
  token, plus attention's full score matrices as computed (masked, not
  skipped), 4 L H Dh per query per key. A training step is 3x this."""
  attention = 4 * config.num_layers * config.num_heads * config.head_dim
  return float(rows * (2 * n * length + attention * length * length))


def preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
  """The config of preset `name` for a vocabulary, with fields overridden."""
  make = registry.lookup(PRESETS, "model preset", name)
  return dataclasses.replace(make(vocab_size), **overrides)
