"""A Llama / Qwen2-family decoder in Flax NNX.

The attribute names mirror Hugging Face's (`embed_tokens`, `layers[i].self_attn
.q_proj`, ...) so the weight bridge is a short name table. Every parameter
carries logical axis names in its `logical_axes` metadata (not placed eagerly);
`ugrad.models.sharding` maps them to mesh axes with a rule list.

The same attention code serves training (no cache) and sampling (a `KVCache`
written in place at a slot index), so cached and uncached logits agree.
Weights start from N(0, 0.02) like Llama / Qwen2 (`initializer_range`), norm
scales from 1, the scalar head from 0. Per-token log-probs of a
`Transformer` are `ugrad.models.logprobs.token_logprobs`.
"""

from typing import Optional

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp

from ugrad import registry
from ugrad.models import attention as attn
from ugrad.models import embedding
from ugrad.models import layer_stack
from ugrad.models import quantize
from ugrad.models.layer_stack import REMAT_POLICIES  # pylint: disable=unused-import
from ugrad.models.model_config import ModelConfig
from ugrad.models.model_config import wide as _wide
from ugrad.models import sharding

_INIT_STD = 0.02  # Llama / Qwen2 `initializer_range`.


def _meta(*names):
  """Param metadata: logical axis names, applied later by a rule list.

  Under their own key, not flax's `out_sharding`: flax would read those as
  mesh axes whenever a mesh is set (`jax.set_mesh`), and these are not."""
  return {"logical_axes": names}


def _normal(key, shape, dtype=jnp.float32):
  """N(0, _INIT_STD^2). The barrier keeps XLA from fusing the scaling into
  the sampling, so a jitted (sharded) init gives the same bits as an eager
  one: without it about a quarter of the values differ in the last bit."""
  dtype = jnp.dtype(dtype)
  return jax.lax.optimization_barrier(
      jax.random.normal(key, shape, dtype)
  ) * jnp.asarray(_INIT_STD, dtype)


class Dense(nnx.Linear):
  """`nnx.Linear` that multiplies [..., in] inputs as one [N, in] matrix.

  Same parameters (`kernel` [in, out], `bias` [out]) and result; XLA:CPU runs
  the backward pass of rank-3 dot products about twice as slowly as that of
  the equivalent rank-2 ones (measured on the embedded model's train step).
  A LoRA adapter, where `ugrad.models.lora` attached one as `lora`, adds
  its low-rank term; its frozen kernel may be a `quantize.QuantizedKernel`.
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    flat = x.reshape(-1, x.shape[-1])
    if isinstance(self.kernel, quantize.QuantizedKernel):
      y = self.kernel(flat, self.dtype, self.bias)
    else:
      y = super().__call__(flat)
    if getattr(self, "lora", None) is not None:
      y = y + self.lora(flat)
    return y.reshape(*x.shape[:-1], y.shape[-1])

  def weight(self) -> jax.Array:
    """The [in, out] matrix the layer applies (a LoRA adapter folded in)."""
    w, adapter = quantize.kernel_value(self), getattr(self, "lora", None)
    return w if adapter is None else w + adapter.product().astype(w.dtype)


def _linear(
    cfg: ModelConfig, d_in: int, d_out: int, axes, *, bias: bool, rngs: nnx.Rngs
) -> Dense:
  return Dense(
      d_in,
      d_out,
      use_bias=bias,
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.dtype(cfg.param_dtype),
      kernel_init=_normal,
      kernel_metadata=_meta(*axes),
      bias_metadata=_meta(axes[-1]),
      rngs=rngs,
  )


class RMSNorm(nnx.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, statistics in float32 (as in HF)."""

  def __init__(self, dim: int, eps: float, dtype, param_dtype):
    self.eps = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **_meta("embed"))

  def __call__(self, x: jax.Array) -> jax.Array:
    xw = x.astype(_wide(x.dtype))
    var = jnp.mean(jnp.square(xw), axis=-1, keepdims=True)
    y = (xw * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
    return y * self.scale[...].astype(self.dtype)


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer, preallocated for S slots.

  Attributes:
    keys: per layer, [B, Hkv, S, Dh] (layout "bhsd") or [B, S, Hkv, Dh]
      (layout "bshd").
    values: per layer, same shape as keys.
    layout: "bhsd" or "bshd" (static). Attention reads "bhsd" without a
      transpose; on a 2-core CPU the two measured the same at S = 41
      (experiments/perf/benchmark.py prints both).
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  layout: str = flax.struct.field(pytree_node=False, default="bhsd")


CACHE_LAYOUTS = ("bhsd", "bshd")


def init_cache(
    config: ModelConfig, batch: int, slots: int, layout: str = "bhsd"
) -> KVCache:
  """A zero cache of `slots` positions for `batch` rows."""
  registry.lookup(CACHE_LAYOUTS, "cache layout", layout)
  hkv, dh = config.num_kv_heads, config.head_dim
  shape = (
      (batch, slots, hkv, dh) if layout == "bshd" else (batch, hkv, slots, dh)
  )
  zeros = tuple(
      jnp.zeros(shape, jnp.dtype(config.dtype))
      for _ in range(config.num_layers)
  )
  return KVCache(keys=zeros, values=zeros, layout=layout)


def rotary(
    positions: jax.Array, head_dim: int, theta: float, dtype=jnp.float32
):
  """cos and sin tables [B, T, 1, Dh] for the rotate_half convention."""
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype) / head_dim)
  angles = positions.astype(dtype)[..., None] * inv_freq  # [B, T, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  return jnp.cos(angles), jnp.sin(angles)


def _apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, T, heads, Dh] by position (Llama's rotate_half)."""
  x1, x2 = jnp.split(x.astype(cos.dtype), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * cos + rotated * sin).astype(x.dtype)


def _write(cache: jax.Array, new: jax.Array, index, layout: str) -> jax.Array:
  """Writes new [B, T, Hkv, Dh] into cache at slot `index`, in place."""
  if layout == "bhsd":
    new = new.transpose(0, 2, 1, 3)
    return jax.lax.dynamic_update_slice(
        cache, new.astype(cache.dtype), (0, 0, index, 0)
    )
  return jax.lax.dynamic_update_slice(
      cache, new.astype(cache.dtype), (0, index, 0, 0)
  )


class Attention(nnx.Module):
  """Grouped-query self-attention with rotary embeddings."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    hkv = cfg.num_kv_heads
    self.num_heads, self.num_kv_heads, self.head_dim = h, hkv, dh
    self.attention = cfg.attention
    self.flash = attn.attention_kernel(cfg.attention, cfg.dtype) in (
        attn.FLASH_KERNELS
    )
    bias = cfg.qkv_bias
    self.q_proj = _linear(
        cfg, d, h * dh, ("embed", "heads"), bias=bias, rngs=rngs
    )
    self.k_proj = _linear(
        cfg, d, hkv * dh, ("embed", "kv_heads"), bias=bias, rngs=rngs
    )
    self.v_proj = _linear(
        cfg, d, hkv * dh, ("embed", "kv_heads"), bias=bias, rngs=rngs
    )
    self.o_proj = _linear(
        cfg, h * dh, d, ("heads", "embed"), bias=False, rngs=rngs
    )

  def __call__(self, x, rope, mask, cache_kv=None, index=None):
    """Attention over the current tokens, or over a cache.

    Args:
      x: [B, T, D] normalised inputs.
      rope: (cos, sin), each [B, T, 1, Dh].
      mask: bool [B, T, S]; S = T without a cache, else the cache's slots.
        None (no cache): causal only, over rows whose real tokens come
        first (`attention.attend_causal`).
      cache_kv: None, or (keys, values, layout) of this layer.
      index: the cache slot of x's first token (scalar int).

    Returns:
      ([B, T, D] outputs, the updated (keys, values) or None).
    """
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    q, k = _apply_rotary(q, *rope), _apply_rotary(k, *rope)
    if cache_kv is None and mask is None:  # Rows compacted: see `hidden`.
      out = attn.attend_causal(q, k, v, self.attention)
      return self.o_proj(out.reshape(b, t, -1)), None
    if cache_kv is None:
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
      out = attn.attend_with(q, k, v, mask, "bhsd", self.attention)
      return self.o_proj(out.reshape(b, t, -1)), None
    keys, values, layout = cache_kv
    keys = _write(keys, k, index, layout)
    values = _write(values, v, index, layout)
    if t == 1:  # Decoding one token keeps its own einsums over the cache.
      out = attn.attend(q, keys, values, mask, layout)
    elif self.flash and isinstance(index, int) and index == 0:
      # Prefill of a fresh cache: the last query's mask is the keys'.
      out = attn.attend_compacted(q, k, v, mask[:, -1, :t], self.attention)
    else:  # Prefill.
      out = attn.attend_with(q, keys, values, mask, layout, self.attention)
    return self.o_proj(out.reshape(b, t, -1)), (keys, values)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.mlp_size
    self.gate_proj = _linear(cfg, d, f, ("embed", "mlp"), bias=False, rngs=rngs)
    self.up_proj = _linear(cfg, d, f, ("embed", "mlp"), bias=False, rngs=rngs)
    self.down_proj = _linear(cfg, f, d, ("mlp", "embed"), bias=False, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
  """Pre-norm residual block: attention then MLP."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    d = cfg.hidden_size
    self.input_layernorm = RMSNorm(d, cfg.rms_eps, dtype, pdtype)
    self.self_attn = Attention(cfg, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(d, cfg.rms_eps, dtype, pdtype)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, rope, mask, cache_kv=None, index=None):
    attn, new_kv = self.self_attn(
        self.input_layernorm(x), rope, mask, cache_kv, index
    )
    x = x + attn
    return x + self.mlp(self.post_attention_layernorm(x)), new_kv


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
  """Positions [B, T] of left-padded rows: cumsum(mask) - 1, 0 on padding."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), -1) - 1, 0)


class Backbone(nnx.Module):
  """Embedding, decoder layers and final norm, shared by every head."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed_tokens = embedding.Embed(
        config.vocab_size,
        config.hidden_size,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        embedding_init=_normal,
        embedding_metadata=_meta("vocab", "embed"),
        rngs=rngs,
    )
    self.layers = nnx.List(
        [DecoderLayer(config, rngs=rngs) for _ in range(config.num_layers)]
    )
    self.norm = RMSNorm(
        config.hidden_size,
        config.rms_eps,
        jnp.dtype(config.dtype),
        jnp.dtype(config.param_dtype),
    )

  def hidden(
      self, tokens: jax.Array, attention_mask: Optional[jax.Array] = None
  ) -> jax.Array:
    """Final hidden states [B, T, D] (after the last norm).

    Args:
      tokens: int [B, T] token ids; prompts may be left-padded.
      attention_mask: [B, T], 1 on real tokens; None means all real.
    """
    b, t = tokens.shape
    flash = (
        attn.attention_kernel(self.config.attention, self.config.dtype)
        in attn.FLASH_KERNELS
    )
    causal = jnp.tril(jnp.ones((t, t), bool))[None]
    order = None
    if attention_mask is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
      mask = None if flash else jnp.broadcast_to(causal, (b, t, t))
    else:
      positions = positions_from_mask(attention_mask)
      mask = causal & (attention_mask > 0)[:, None, :]
      if flash:  # Real tokens first: flash kernels take a causal mask only.
        order = attn.real_first(attention_mask)
        tokens = jnp.take_along_axis(tokens, order, axis=1)
        positions = jnp.take_along_axis(positions, order, axis=1)
        mask = None
    rope = rotary(
        positions,
        self.config.head_dim,
        self.config.rope_theta,
        _wide(self.config.dtype),
    )
    x = sharding.constrain_rows(self.embed_tokens(tokens))
    x = layer_stack.run_layers(
        list(self.layers),
        x,
        rope,
        mask,
        self.config.remat,
        self.config.scan_layers,
    )
    if order is not None:  # Back to the rows' own order.
      x = jnp.take_along_axis(x, jnp.argsort(order, axis=1)[..., None], axis=1)
    return self.norm(x)

  def hidden_cached(
      self,
      tokens: jax.Array,
      positions: jax.Array,
      kv_mask: jax.Array,
      cache: KVCache,
      index,
  ):
    """Hidden states of tokens written into a cache at slots index..index+T-1.

    Query t attends to the cache slots s <= index + t where kv_mask is set.

    Args:
      tokens: int [B, T] token ids.
      positions: int [B, T] rotary positions of the tokens.
      kv_mask: [B, S], 1 on cache slots holding real tokens (those being
        written included).
      cache: the KVCache of S slots.
      index: scalar int, the slot of tokens[:, 0].

    Returns:
      ([B, T, D] final hidden states, the updated cache).
    """
    t, s = tokens.shape[1], kv_mask.shape[1]
    visible = jnp.arange(s)[None, :] <= index + jnp.arange(t)[:, None]
    mask = visible[None] & (kv_mask > 0)[:, None, :]
    rope = rotary(
        positions,
        self.config.head_dim,
        self.config.rope_theta,
        _wide(self.config.dtype),
    )
    x = self.embed_tokens(tokens)
    keys, values = [], []
    for layer, k, v in zip(self.layers, cache.keys, cache.values):
      x, (k, v) = layer(x, rope, mask, (k, v, cache.layout), index)
      keys.append(k)
      values.append(v)
    cache = KVCache(keys=tuple(keys), values=tuple(values), layout=cache.layout)
    return self.norm(x), cache


class Transformer(Backbone):
  """A causal language model: logits [B, T, V]."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    super().__init__(config, rngs=rngs)
    if not config.tie_embeddings:
      self.lm_head = _linear(
          config,
          config.hidden_size,
          config.vocab_size,
          ("embed", "vocab"),
          bias=False,
          rngs=rngs,
      )

  def output_embedding(self) -> jax.Array:
    """The [D, V] matrix that maps hidden states to logits."""
    tied = self.config.tie_embeddings
    w = self.embed_tokens.embedding[...].T if tied else self.lm_head.weight()
    return sharding.reduce_gradient_here(w, ("embed", "vocab"))

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Projects hidden states [..., D] to logits [..., V]."""
    w = self.output_embedding().astype(jnp.dtype(self.config.dtype))
    logits = hidden.reshape(-1, hidden.shape[-1]) @ w  # Rank 2: see Dense.
    return logits.reshape(*hidden.shape[:-1], w.shape[-1])

  def __call__(
      self, tokens: jax.Array, attention_mask: Optional[jax.Array] = None
  ) -> jax.Array:
    """Logits [B, T, V]; see `hidden` for the arguments."""
    return self.logits(self.hidden(tokens, attention_mask))


class ScalarModel(Backbone):
  """The backbone with a scalar head: a value or reward per token, [B, T].

  `score_head` has no bias, like HF's `Qwen2ForSequenceClassification.score`,
  and starts at zero so a fresh critic predicts 0.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    super().__init__(config, rngs=rngs)
    self.score_head = Dense(
        config.hidden_size,
        1,
        use_bias=False,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        kernel_init=nnx.initializers.zeros,
        kernel_metadata=_meta("embed", None),
        rngs=rngs,
    )

  def __call__(
      self, tokens: jax.Array, attention_mask: Optional[jax.Array] = None
  ) -> jax.Array:
    """Scores [B, T] (float32 or wider): the score of each prefix
    tokens[b, :t+1]."""
    h = self.hidden(tokens, attention_mask)
    return self.score_head(h)[..., 0].astype(_wide(h.dtype))
