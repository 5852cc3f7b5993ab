"""Attention kernels of the decoder: ugrad's grouped einsums, and
`jax.nn.dot_product_attention` (XLA's, or cuDNN flash attention on a GPU).

Every kernel takes [B, T, H, Dh] queries, keys and values in a KV-cache
layout ("bshd" or "bhsd"), and a bool mask [B, T, S]; `ModelConfig.attention`
chooses one for training and prefill (`attend_with`), and one-token decode
keeps the einsums (`attend`).
"""

import jax
import jax.numpy as jnp

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


def attention_kernel(name: str, dtype) -> str:
  """The kernel that `ModelConfig.attention` names: "auto" is cudnn on a GPU
  in 16-bit compute (its flash kernel takes no float32), elsewhere ugrad's
  own grouped einsums ("einsum", bit-identical to earlier releases)."""
  if name != "auto":
    return name
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if jax.default_backend() == "gpu" and half else "einsum"


def attend_with(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    layout: str,
    name: str,
) -> jax.Array:
  """`attend` through `jax.nn.dot_product_attention` with the kernel of
  `attention_kernel(name)` ("einsum": `attend` itself). Its masked scores
  get the same -0.7 * float32 max as `MASK_VALUE`, so a query row that sees
  no key gives the same uniform softmax, not NaN."""
  kernel = attention_kernel(name, q.dtype)
  if kernel == "einsum":
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
