"""Fixed-shape token layouts shared by every data source.

Every row is a LEFT-padded prompt of P tokens followed by a RIGHT-padded
completion of N tokens, so all batches of a run have one shape [B, P + N] and
the jitted train step compiles once. The sampler's KV cache grows in
phases of fixed slot counts (`kv_phases`), one compiled loop each.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ugrad import errors
from ugrad.models import transformer


def pack_prompts(
    prompts: Sequence[Sequence[int]], prompt_len: int, pad_id: int
):
  """Left-pads prompts into int32 [B, P] tokens and mask.

  Raises:
    ValueError: when a prompt is longer than `prompt_len`.
  """
  tokens = np.full((len(prompts), prompt_len), pad_id, np.int32)
  mask = np.zeros((len(prompts), prompt_len), np.int32)
  for i, ids in enumerate(prompts):
    if len(ids) > prompt_len:
      raise errors.UserError(
          f"prompt {i} has {len(ids)} tokens, more than the "
          f"prompt length {prompt_len}"
      )
    if ids:
      tokens[i, prompt_len - len(ids) :] = ids
      mask[i, prompt_len - len(ids) :] = 1
  return tokens, mask


def pack(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    prompt_len: int,
    completion_len: int,
    pad_id: int,
) -> dict:
  """Packs prompt and completion ids into the fixed [B, P + N] layout.

  Returns:
    A dict of int32 [B, P + N] arrays: tokens, attention_mask,
    completion_mask.

  Raises:
    ValueError: when a prompt or completion does not fit, or the numbers of
      prompts and completions differ.
  """
  if len(prompts) != len(completions):
    raise errors.UserError(
        f"{len(prompts)} prompts but {len(completions)} "
        "completions; pack needs one completion per prompt"
    )
  p_tokens, p_mask = pack_prompts(prompts, prompt_len, pad_id)
  b = len(prompts)
  c_tokens = np.full((b, completion_len), pad_id, np.int32)
  c_mask = np.zeros((b, completion_len), np.int32)
  for i, ids in enumerate(completions):
    if len(ids) > completion_len:
      raise errors.UserError(
          f"completion {i} has {len(ids)} tokens, more than the "
          f"completion budget {completion_len} "
          "(raise sampling.max_new_tokens)"
      )
    c_tokens[i, : len(ids)] = ids
    c_mask[i, : len(ids)] = 1
  return dict(
      tokens=np.concatenate([p_tokens, c_tokens], 1),
      attention_mask=np.concatenate([p_mask, c_mask], 1),
      completion_mask=np.concatenate([np.zeros_like(p_mask), c_mask], 1),
  )


def completion_ids(tokens: np.ndarray, completion_mask: np.ndarray):
  """The completion token ids of each row, as lists."""
  return [row[m > 0].tolist() for row, m in zip(tokens, completion_mask)]


def kv_phases(p: int, n: int, block: Optional[int]) -> tuple[int, ...]:
  """The cache slots of each phase of the sampler's decode loop
  (`SamplingConfig.kv_block`): the multiples of `block` after `p`, then
  p + n; one phase, (p + n,), when `block` is None or p + n <= block.
  Decode step i writes slot p + i in the first phase longer than p + i."""
  slots = p + n
  if block is None or slots <= block:
    return (slots,)
  return tuple(range(block * (p // block + 1), slots, block)) + (slots,)


def grow_cache(cache: transformer.KVCache, slots: int) -> transformer.KVCache:
  """The cache with zero slots appended up to `slots`."""
  axis = 2 if cache.layout == "bhsd" else 1

  def pad(x):
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, slots - x.shape[axis])
    return jnp.pad(x, widths)

  return jax.tree.map(pad, cache)
