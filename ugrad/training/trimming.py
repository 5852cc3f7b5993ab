"""Trimmed padding: a rollout's all-padding columns left out of the passes.

Every batch has the fixed layout [B, P + N] (`ugrad.sampling.layout`):
prompts left-padded to P, completions right-padded from column P. Columns
where no row has a real token (the leading ones before the longest prompt,
the trailing ones after the longest completion) change no log-prob, loss or
gradient: positions are `cumsum(attention_mask) - 1`, so dropping columns
whose mask is 0 in every row moves no token's position, and causal attention
never looks right. `trim` slices them off, keeping a width rounded up to a
multiple of the bucket so the jitted passes compile once per width: at most
ceil((P + N) / bucket) widths in a run.

One exception: the first completion token of a row with an empty prompt is
predicted from a padding column, whose attention sees no real key and
averages over every column, so that one log-prob depends on the width.
Every task and data source gives each row a prompt.
"""

import dataclasses

import numpy as np

from ugrad import rollout as rollout_lib


def bucket_of(config) -> int:
  """The config's trim bucket; 0 (off) for a config stored before the
  key existed."""
  return int(config.get("trim_bucket", 0))


def span(real, bucket: int) -> tuple[int, int]:
  """The columns [start, end) that `trim` keeps of a [B, T] `real` mask.

  The width is the real columns' span (first to last column with a real
  token in any row) rounded up to a multiple of `bucket` (at least one
  bucket), capped at T; the extra columns come from the right end first,
  then the left, so no real column is ever cut. `bucket` 0 keeps all.
  """
  real = np.asarray(real) > 0
  t = real.shape[-1]
  if bucket <= 0:
    return 0, t
  cols = np.flatnonzero(real.reshape(-1, t).any(0))
  lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
  width = min(t, max(1, -(-(hi - lo) // bucket)) * bucket)
  end = min(lo + width, t)
  return end - width, end


def real_mask(rollout: rollout_lib.Rollout):
  """[B, T] bool: the columns of a row that hold a real token (attended,
  trained or labelled); None when every token is real."""
  if rollout.attention_mask is None:
    return None
  real = np.asarray(rollout.attention_mask) > 0
  for mask in (rollout.completion_mask, rollout.step_mask):
    if mask is not None:
      real = real | (np.asarray(mask) > 0)
  return real


def trim(rollout: rollout_lib.Rollout, bucket: int) -> rollout_lib.Rollout:
  """`rollout` with its all-padding columns dropped (see `span`): every
  [B, T] field sliced the same way, the [B] fields as they are. A rollout
  without an attention mask (every token real) or `bucket` 0 is returned
  unchanged; trimming a trimmed rollout changes nothing."""
  real = real_mask(rollout)
  if real is None or bucket <= 0:
    return rollout
  t = real.shape[1]
  start, end = span(real, bucket)
  if (start, end) == (0, t):
    return rollout
  shape = tuple(np.shape(rollout.tokens))
  sliced = {}
  for field in dataclasses.fields(rollout):
    x = getattr(rollout, field.name)
    if x is not None and tuple(np.shape(x))[:2] == shape:
      sliced[field.name] = x[:, start:end]
  return rollout.replace(**sliced)
