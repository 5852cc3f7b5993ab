"""Per-token log-probs of a policy: the vocabulary head, chunked.

`token_logprobs` maps a `ugrad.models.transformer.Transformer` and token ids
to `log pi(token | prefix)` per position, projecting the final hidden states
onto the vocabulary a sequence chunk at a time under `jax.checkpoint`, so
that neither the forward nor the backward pass holds the whole [B, T, V]
logits. It is what the losses and the reference / old log-probs of a run
differentiate or evaluate; with `temperature`, those of softmax(z / T), the
distribution a sampler at temperature T draws from.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad.models import transformer
from ugrad.models.model_config import wide as _wide


def _chunk_logprobs(hidden, targets, w, temperature: float = 1.0):
  """log softmax(hidden @ w / temperature)[targets]: [B, C, D], [B, C],
  [D, V] -> [B, C]. `temperature` is a static Python float; at 1 there is
  no division (the untempered computation, bit for bit)."""
  flat = hidden.reshape(
      -1, hidden.shape[-1]
  )  # Rank-2 dots: see transformer.Dense.
  logits = (flat @ w.astype(hidden.dtype)).astype(_wide(hidden.dtype))
  if temperature != 1.0:
    logits = logits / temperature
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets.reshape(-1, 1), axis=-1)[:, 0]
  return (picked - logz).reshape(targets.shape)


def token_logprobs(
    model: transformer.Transformer,
    tokens: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    chunk_size: int = 128,
    temperature: float = 1.0,
) -> jax.Array:
  """Per-token log-probs, `logp[b, t] = log pi(tokens[b, t] | tokens[b, :t])`.

  Column 0 has no context and is 0. The vocabulary projection runs over
  sequence chunks of `chunk_size` under `jax.checkpoint`, so neither the
  forward nor the backward pass holds more than one [B, chunk, V] logits
  block. Differentiable, and jit-able after `nnx.merge`.

  Args:
    model: the policy.
    tokens: int [B, T].
    attention_mask: [B, T] or None (see `Transformer.hidden`).
    chunk_size: sequence positions projected at once.
    temperature: a Python float > 0: the log-probs of softmax(z / T), the
      distribution a sampler at temperature T draws from (1: the model's).

  Returns:
    [B, T] log-probs, float32 (float64 for a float64 model).
  """
  if not temperature > 0:
    raise errors.UserError(f"temperature must be > 0, got {temperature}")
  b, t = tokens.shape
  hidden = model.hidden(tokens, attention_mask)[:, :-1]  # predicts 1..T-1
  targets = tokens[:, 1:]
  w = model.output_embedding()
  if t - 1 <= chunk_size:
    return jnp.pad(
        _chunk_logprobs(hidden, targets, w, temperature), ((0, 0), (1, 0))
    )
  c = chunk_size
  n = -(-(t - 1) // c)
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
