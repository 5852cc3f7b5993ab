"""Per-token log-probs of a policy: the vocabulary head, chunked by tokens.

`token_logprobs` maps a `ugrad.models.transformer.Transformer` and token ids
to `log pi(token | prefix)` per position. The final hidden states are
projected onto the vocabulary about `chunk_tokens` tokens per batch shard at
a time (all rows times a few positions) under `jax.checkpoint`, so neither
the forward nor the backward pass holds more than one [chunk_tokens, V]
logits block per shard, whatever the batch. Logits come out of the dot in
float32 (float64 for a float64 model) through `preferred_element_type`: a
bf16 model's logits are never rounded to bf16. It is what the losses and the
reference / old log-probs of a run differentiate or evaluate; with
`temperature`, those of softmax(z / T), the distribution a sampler at
temperature T draws from.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad.models import sharding
from ugrad.models import transformer
from ugrad.models.model_config import wide as _wide

CHUNK_TOKENS = 1024


def _logits(hidden, w):
  """[C, D] @ [D, V] in the compute dtype, accumulated and returned wide (a
  rank-2 dot: see transformer.Dense)."""
  return jnp.dot(
      hidden, w.astype(hidden.dtype), preferred_element_type=_wide(hidden.dtype)
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunk_logprobs(hidden, targets, w, temperature: float):
  """log softmax(hidden @ w / temperature)[targets]: [B, C, D], [B, C],
  [D, V] -> [B, C]. `temperature` is a static Python float; at 1 there is
  no division (the untempered computation, bit for bit).

  B is the sharded (batch) axis; flattening [B, C] keeps it major, so each
  batch shard projects its own rows' C positions without resharding.

  The backward pass recomputes the logits (nothing of [B * C, V] is saved)
  and turns them in place into their cotangent, which it rounds to the
  compute dtype before both dots, as a cast of compute-dtype logits would:
  autodiff would hold the logits beside their cotangent and, through
  `preferred_element_type`, upcast `w` to float32. A float32 or float64
  model's gradients are autodiff's up to rounding."""
  return _forward(hidden, targets, w, temperature)[0]


def _tempered(logits, temperature: float):
  return logits if temperature == 1.0 else logits / temperature


def _forward(hidden, targets, w, temperature: float):
  logits = _tempered(
      _logits(hidden.reshape(-1, hidden.shape[-1]), w), temperature
  )
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets.reshape(-1, 1), axis=-1)[:, 0]
  return (picked - logz).reshape(targets.shape), logz


def _chunk_fwd(hidden, targets, w, temperature: float):
  logp, logz = _forward(hidden, targets, w, temperature)
  return logp, (hidden, targets, w, logz)


def _chunk_bwd(temperature: float, res, ct):
  hidden, targets, w, logz = res
  flat = hidden.reshape(-1, hidden.shape[-1])
  logits = _tempered(_logits(flat, w), temperature)
  # d logp / d z = (onehot(target) - softmax(z / T)) / T.
  onehot = targets.reshape(-1, 1) == jnp.arange(logits.shape[-1])
  ct = _tempered(ct.reshape(-1, 1).astype(logits.dtype), temperature)
  g = (onehot * ct - jnp.exp(logits - logz[:, None]) * ct).astype(flat.dtype)
  wide = _wide(flat.dtype)
  d_hidden = jnp.dot(g, w.astype(flat.dtype).T, preferred_element_type=wide)
  d_w = jnp.dot(flat.T, g, preferred_element_type=wide)
  return (
      d_hidden.astype(hidden.dtype).reshape(hidden.shape),
      None,
      d_w.astype(w.dtype),
  )


_chunk_logprobs.defvjp(_chunk_fwd, _chunk_bwd)


def token_logprobs(
    model: transformer.Transformer,
    tokens: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    *,
    chunk_tokens: int = CHUNK_TOKENS,
    temperature: float = 1.0,
) -> jax.Array:
  """Per-token log-probs, `logp[b, t] = log pi(tokens[b, t] | tokens[b, :t])`.

  Column 0 has no context and is 0. The vocabulary projection runs over
  chunks of all B rows times C positions under `jax.checkpoint`, with
  C = max(1, chunk_tokens * S // B) (evened out so that the last chunk is
  not mostly padding), S the batch shards of the set mesh (`jax.set_mesh`,
  as the trainer does; 1 without one): each shard projects its own B / S
  rows, so neither pass holds more than one [chunk_tokens, V] logits block
  per shard (B / S once that is more), whatever the batch. Differentiable,
  and jit-able after `nnx.merge`.

  Args:
    model: the policy.
    tokens: int [B, T].
    attention_mask: [B, T] or None (see `Transformer.hidden`).
    chunk_tokens: tokens (rows x positions) each batch shard projects at
      once.
    temperature: a Python float > 0: the log-probs of softmax(z / T), the
      distribution a sampler at temperature T draws from (1: the model's).

  Returns:
    [B, T] log-probs, float32 (float64 for a float64 model).
  """
  if chunk_tokens < 1:
    raise errors.UserError(f"chunk_tokens={chunk_tokens} must be >= 1")
  if not temperature > 0:
    raise errors.UserError(f"temperature must be > 0, got {temperature}")
  b, t = tokens.shape
  hidden = model.hidden(tokens, attention_mask)[:, :-1]  # predicts 1..T-1
  targets = tokens[:, 1:]
  w = model.output_embedding()
  # Chunks; the positions of each fit chunk_tokens per shard.
  n = -(-(t - 1) // max(1, chunk_tokens * sharding.row_shards(b) // b))
  if n == 1:
    return jnp.pad(
        _chunk_logprobs(hidden, targets, w, temperature), ((0, 0), (1, 0))
    )
  c = -(-(t - 1) // n)  # positions per chunk, evened out
  pad = n * c - (t - 1)
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [n, B, c, ...]: lax.map runs one chunk at a time.
  hidden = hidden.reshape(b, n, c, -1).swapaxes(0, 1)
  targets = targets.reshape(b, n, c).swapaxes(0, 1)
  # Under checkpoint the backward pass recomputes each chunk's logits instead
  # of saving all n of them.
  chunk_fn = jax.checkpoint(_chunk_logprobs, static_argnums=3)
  logp = jax.lax.map(
      lambda xs: chunk_fn(xs[0], xs[1], w, temperature), (hidden, targets)
  )
  logp = logp.swapaxes(0, 1).reshape(b, n * c)[:, : t - 1]  # [B, T-1]
  return jnp.pad(logp, ((0, 0), (1, 0)))
