"""Attention kernels of the decoder: ugrad's grouped einsums,
`jax.nn.dot_product_attention` (XLA's, or cuDNN flash attention on a GPU),
and Pallas splash attention (TPU).

Two entry points:

* `attend_with` takes [B, T, H, Dh] queries, keys and values in a KV-cache
  layout ("bshd" or "bhsd") and a dense bool mask [B, T, S]: prefill, and
  training with the einsum or XLA kernels; one-token decode keeps the
  einsums (`attend`).
* `attend_causal` takes rows whose real tokens come first (`real_first`
  compacts them; the padding follows) and applies only a causal mask, which
  flash kernels skip block by block and never materialise: training and
  reference passes with the FLASH kernels. A real query then sees exactly
  the real keys before it, as under the dense mask; padding queries see
  other padding (their outputs are read by nothing).
"""

import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_kernel as splash,
)
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_mask as splash_mask,
)

from ugrad.models import sharding
from ugrad.models.model_config import wide

# Masked attention scores get this instead of -inf, so a query row that sees
# no key at all (a left-padding row) gives a uniform softmax, never NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, layout: str
) -> jax.Array:
  """Grouped-query softmax attention.

  Args:
    q: [B, T, H, Dh] queries.
    k: keys, [B, S, Hkv, Dh] ("bshd") or [B, Hkv, S, Dh] ("bhsd").
    v: values, same shape as k.
    mask: bool [B, T, S], True where query t may attend to key slot s.
    layout: the layout of k and v.

  Returns:
    [B, T, H, Dh] attention outputs.
  """
  b, t, h, dh = q.shape
  hkv = k.shape[2] if layout == "bshd" else k.shape[1]
  g = h // hkv
  # Heads first, and the g query heads sharing a kv head stacked along the
  # query axis: both einsums become plain batched matmuls over (b, kv head).
  q = q.reshape(b, t, hkv, g, dh).transpose(0, 2, 3, 1, 4)
  q = q.reshape(b, hkv, g * t, dh) * (dh**-0.5)
  kv_sub = "bskd" if layout == "bshd" else "bksd"
  scores = jnp.einsum(
      f"bkqd,{kv_sub}->bkqs", q, k, preferred_element_type=wide(q.dtype)
  )
  scores = scores.reshape(b, hkv, g, t, -1)
  scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum(f"bkqs,{kv_sub}->bkqd", probs.reshape(b, hkv, g * t, -1), v)
  return (
      out.reshape(b, hkv, g, t, dh)
      .transpose(0, 3, 1, 2, 4)
      .reshape(b, t, h, dh)
  )


# Kernels that run training's attention causally over compacted rows
# (`attend_causal`) instead of under a dense [B, T, T] mask.
FLASH_KERNELS = ("cudnn", "splash")


def attention_kernel(name: str, dtype, platform: str | None = None) -> str:
  """The kernel that `ModelConfig.attention` names on `platform` (default:
  JAX's backend): "auto" is splash on a TPU, cudnn on a GPU in 16-bit
  compute (its flash kernel takes no float32), elsewhere ugrad's own
  grouped einsums ("einsum", bit-identical to earlier releases)."""
  if name != "auto":
    return name
  platform = platform or jax.default_backend()
  if platform == "tpu":
    return "splash"
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if platform == "gpu" and half else "einsum"


def real_first(attention_mask: jax.Array) -> jax.Array:
  """The permutation [B, T] of each row that puts its real tokens first, in
  order, then its padding (a stable sort): under it, causal attention is
  the dense mask's attention for every real query, wherever the padding
  was (left, right, or between)."""
  return jnp.argsort(attention_mask <= 0, axis=-1, stable=True)


def attend_causal(
    q: jax.Array, k: jax.Array, v: jax.Array, name: str
) -> jax.Array:
  """Causal grouped-query attention with no other mask.

  Args:
    q: [B, T, H, Dh] queries, real tokens first in each row (`real_first`).
    k: [B, T, Hkv, Dh] keys, same order.
    v: values, same shape as k.
    name: `ModelConfig.attention`; a kernel of `FLASH_KERNELS`, or einsum /
      xla (the reference the flash kernels are tested against).

  Returns:
    [B, T, H, Dh] attention outputs.
  """
  kernel = attention_kernel(name, q.dtype)
  if kernel == "splash":
    return _on_batch_shards(_attend_splash, q, k, v)
  t = q.shape[1]
  if kernel == "cudnn":
    # Its training kernel takes even lengths only: one more padding
    # position at the end, which no real query sees.
    pad = [(0, 0), (0, t % 2), (0, 0), (0, 0)]
    out = jax.nn.dot_product_attention(
        jnp.pad(q, pad),
        jnp.pad(k, pad),
        jnp.pad(v, pad),
        is_causal=True,
        implementation="cudnn",
    )
    return out[:, :t]
  causal = jnp.broadcast_to(
      jnp.tril(jnp.ones((t, t), bool)), (q.shape[0], t, t)
  )
  return attend_with(q, k, v, causal, "bshd", kernel)


def attend_compacted(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, name: str
) -> jax.Array:
  """`attend_causal` on rows in their own order: q, k, v [B, T, ., Dh]
  (k, v "bshd") and key_mask [B, T], 1 on real tokens; the rows are
  compacted with `real_first` and the outputs put back (prefill)."""
  order = real_first(key_mask)
  take = lambda x, idx: jnp.take_along_axis(x, idx[:, :, None, None], axis=1)
  out = attend_causal(take(q, order), take(k, order), take(v, order), name)
  return take(out, jnp.argsort(order, axis=1))


# Splash attention's blocks: query and key positions per tile (MaxText's
# default is 512; shorter sequences use one block).
_SPLASH_BLOCK = 512


def _splash_kernel(length: int, group: int, block: int, interpret: bool):
  """A causal splash kernel for `group` query heads sharing one kv head."""
  mask = splash_mask.MultiHeadMask(
      [splash_mask.CausalMask((length, length)) for _ in range(group)]
  )
  sizes = splash.BlockSizes(
      block_q=block,
      block_kv=block,
      block_kv_compute=block,
      block_q_dkv=block,
      block_kv_dkv=block,
      block_kv_dkv_compute=block,
      block_q_dq=block,
      block_kv_dq=block,
  )
  # Built in each trace (its block tables are arrays of that trace; the
  # mask's processing is cached by Pallas).
  return splash.make_splash_mqa(
      mask,
      block_sizes=sizes,
      head_shards=1,
      q_seq_shards=1,
      interpret=interpret,
  )


def _attend_splash(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Pallas splash attention (causal; Pallas's interpreter where the
  program is not lowered for a TPU, for tests): each kv head's group of
  query heads is one MQA kernel call, mapped over rows and kv heads. The
  sequence is padded at the end to a multiple of the block (padding no
  real query sees); queries are scaled by Dh^-0.5 first (the kernel does
  not scale)."""
  b, t, h, dh = q.shape
  hkv = k.shape[2]
  block = min(_SPLASH_BLOCK, 128 * -(-t // 128))
  length = block * -(-t // block)
  pad = [(0, 0), (0, length - t), (0, 0), (0, 0)]
  q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
  q = q * jnp.asarray(dh**-0.5, q.dtype)
  # [B, Hkv, G, L, Dh] queries; [B, Hkv, L, Dh] keys and values.
  q = q.reshape(b, length, hkv, h // hkv, dh).transpose(0, 2, 3, 1, 4)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def mapped(interpret):
    kernel = _splash_kernel(length, h // hkv, block, interpret)
    return jax.vmap(jax.vmap(kernel))

  # The Mosaic kernel where the program is lowered for a TPU (a TPU host, or
  # an ahead-of-time compile for a TPU topology on any host), else
  # Pallas's interpreter.
  out = jax.lax.platform_dependent(
      q, k, v, tpu=mapped(False), default=mapped(True)
  )
  out = out.transpose(0, 3, 1, 2, 4).reshape(b, length, h, dh)
  return out[:, :t]


def _on_batch_shards(fn, q: jax.Array, k: jax.Array, v: jax.Array):
  """`fn(q, k, v)` on each device's rows and heads under a mesh (a Pallas
  kernel is one device's program: XLA cannot split it), else `fn` itself.
  Rows go over the mesh's batch axes and heads over `tensor` where they
  divide, as `sharding.constrain_rows` and the parameter rules place them."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn(q, k, v)
  names = mesh.axis_names
  batch = tuple(a for a in sharding.BATCH_AXES if a in names)
  if q.shape[0] % math.prod(mesh.shape[a] for a in batch):
    batch = ()
  tensor = mesh.shape.get("tensor", 1)
  heads = "tensor" if tensor > 1 and k.shape[2] % tensor == 0 else None
  spec = jax.P(batch or None, None, heads, None)
  return jax.shard_map(
      fn, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
  )(q, k, v)


def attend_with(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    layout: str,
    name: str,
) -> jax.Array:
  """`attend` through `jax.nn.dot_product_attention` with the kernel of
  `attention_kernel(name)` ("einsum", and "splash", which takes no dense
  mask: `attend` itself). Its masked scores get the same -0.7 * float32
  max as `MASK_VALUE`, so a query row that sees no key gives the same
  uniform softmax, not NaN."""
  kernel = attention_kernel(name, q.dtype)
  if kernel in ("einsum", "splash"):
    return attend(q, k, v, mask, layout)
  if layout == "bhsd":
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  if kernel == "cudnn":
    return _attend_cudnn(q, k, v, mask)
  return jax.nn.dot_product_attention(
      q, k, v, mask=mask[:, None], implementation=kernel
  )


def _attend_cudnn(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    implementation: str = "cudnn",
) -> jax.Array:
  """cuDNN flash attention on [B, T, H, Dh] queries and [B, S, Hkv, Dh] keys
  and values, within its limits: with a mask, its training kernel takes
  only even T and S (so both are padded by one where odd, the extra keys
  masked, the extra query dropped), and a query row that sees no key (a
  left-padding position) gets NaN gradients (so such a row sees every key
  instead: its output is a padding position's, which no real position
  attends to and no loss reads)."""
  t, s = q.shape[1], k.shape[1]
  if t % 2 or s % 2:
    pad = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2))
    q, k, v = pad(q, t % 2), pad(k, s % 2), pad(v, s % 2)
    mask = jnp.pad(mask, [(0, 0), (0, t % 2), (0, s % 2)])
  mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
  out = jax.nn.dot_product_attention(
      q, k, v, mask=mask[:, None], implementation=implementation
  )
  return out[:, :t]
