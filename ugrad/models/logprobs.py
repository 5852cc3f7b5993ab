"""Per-token log-probs of a policy: the vocabulary head, chunked by tokens.

`token_logprobs` maps a `ugrad.models.transformer.Transformer` and token ids
to `log pi(token | prefix)` per position. The final hidden states are
flattened to tokens and projected onto the vocabulary `chunk_tokens` tokens
at a time under `jax.checkpoint`, so neither the forward nor the backward
pass holds more than one [chunk_tokens, V] logits block, whatever the batch:
per-chip memory of the head stays flat as the batch grows. Logits come out of
the dot in float32 (`preferred_element_type`), never rounded to a bf16
model's dtype. Given `positions` (the completion mask), only those tokens
are projected. It is what the losses and the reference / old log-probs of a
run differentiate or evaluate.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad.models import sharding
from ugrad.models import transformer
from ugrad.models.model_config import wide as _wide

CHUNK_TOKENS = 4096


def _chunk_logprobs(hidden, targets, w):
  """log softmax(hidden @ w)[targets]: [C, D], [C], [D, V] -> [C].

  A rank-2 dot (see transformer.Dense) accumulated and returned in float32
  (float64 for a float64 model): a bf16 model's logits are not rounded."""
  logits = jnp.dot(
      hidden, w.astype(hidden.dtype), preferred_element_type=_wide(hidden.dtype)
  )
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
  return picked - logz


def _project(hidden, targets, w, chunk: int, limit):
  """[S, L, D], [S, L] -> [S, L] log-probs, S * chunk tokens at a time.

  Args:
    hidden: the tokens of each of S row blocks (one per batch shard).
    targets: their next-token ids.
    w: [D, V] output embedding.
    chunk: tokens of each block per step.
    limit: None, or a scalar: chunks starting at or after it are skipped
      (their log-probs are 0); tokens past it are not wanted.
  """
  s, length, d = hidden.shape
  project = lambda h, t: _chunk_logprobs(h.reshape(-1, d), t.reshape(-1), w)
  if length <= chunk:
    return project(hidden, targets).reshape(s, length)
  n = -(-length // chunk)
  pad = n * chunk - length
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [n, S, chunk, ...]: lax.map runs one chunk of S * chunk tokens at a time.
  hidden = hidden.reshape(s, n, chunk, d).swapaxes(0, 1)
  targets = targets.reshape(s, n, chunk).swapaxes(0, 1)

  # Under checkpoint the backward pass recomputes each chunk's logits instead
  # of saving all n of them. It wraps the cond too: its residuals are then
  # the step's inputs, and XLA keeps one `w` rather than one per chunk.
  @jax.checkpoint
  def step(xs):
    h, t, start = xs
    if limit is None:
      return project(h, t).reshape(s, chunk)
    return jax.lax.cond(
        start < limit,
        lambda: project(h, t).reshape(s, chunk),
        lambda: jnp.zeros((s, chunk), _wide(h.dtype)),
    )

  starts = jnp.arange(n) * chunk
  logp = jax.lax.map(step, (hidden, targets, starts))
  return logp.swapaxes(0, 1).reshape(s, n * chunk)[:, :length]


def token_logprobs(
    model: transformer.Transformer,
    tokens: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    *,
    positions: Optional[jax.Array] = None,
    chunk_tokens: int = CHUNK_TOKENS,
) -> jax.Array:
  """Per-token log-probs, `logp[b, t] = log pi(tokens[b, t] | tokens[b, :t])`.

  Column 0 has no context and is 0. The [B, T-1] predicting hidden states
  are flattened to tokens and projected onto the vocabulary `chunk_tokens`
  at a time under `jax.checkpoint`, so neither pass holds more than one
  [chunk_tokens, V] float32 logits block (per chip: the tokens stay in their
  batch shard, each shard projecting its share of a chunk).

  With `positions`, only the tokens it marks are projected; the others get
  0. Shapes stay static: within each batch shard the marked tokens are moved
  to the front of a buffer of all its tokens (a stable compaction, in
  order), and chunks that start past the shards' largest count of marked
  tokens are skipped by `lax.cond`. Prompt and padding positions thus cost
  nothing beyond the last partial chunk, wherever the layout puts them.
  Differentiable, and jit-able after `nnx.merge`.

  Args:
    model: the policy.
    tokens: int [B, T].
    attention_mask: [B, T] or None (see `Transformer.hidden`).
    positions: [B, T] bool or int, nonzero where a log-prob is wanted (e.g.
      the completion mask), or None for every position.
    chunk_tokens: flattened tokens projected at once (over all shards).

  Returns:
    [B, T] log-probs, float32 (float64 for a float64 model).
  """
  b, t = tokens.shape
  hidden = model.hidden(tokens, attention_mask)[:, :-1]  # predicts 1..T-1
  d = hidden.shape[-1]
  shards = sharding.row_shards(b)
  chunk = -(-chunk_tokens // shards)
  # [S, L]: the tokens of each batch shard's rows, L = (B / S) * (T - 1).
  hidden = sharding.constrain_rows(hidden.reshape(shards, -1, d))
  targets = tokens[:, 1:].reshape(shards, -1)
  w = model.output_embedding()
  if positions is None:
    logp = _project(hidden, targets, w, chunk, None)
  else:
    wanted = (positions[:, 1:] > 0).reshape(shards, -1)
    count = jnp.sum(wanted, axis=-1, dtype=jnp.int32)  # [S]
    # dest: each token's place in the compacted buffer, wanted ones first.
    before = jnp.cumsum(wanted, axis=-1, dtype=jnp.int32) - 1
    index = jnp.arange(wanted.shape[1], dtype=jnp.int32)
    dest = jnp.where(wanted, before, count[:, None] + index - before - 1)
    # order, its inverse permutation: the token at each compacted place.
    order = jax.vmap(lambda dst: jnp.zeros_like(dst).at[dst].set(index))(dest)
    compact = _project(
        jnp.take_along_axis(hidden, order[..., None], axis=1),
        jnp.take_along_axis(targets, order, axis=1),
        w,
        chunk,
        jnp.max(count),
    )
    logp = jnp.where(wanted, jnp.take_along_axis(compact, dest, axis=1), 0.0)
  return jnp.pad(logp.reshape(b, t - 1), ((0, 0), (1, 0)))
