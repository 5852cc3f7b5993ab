"""A step's data on the host (`Batch`) and the row operations on it:
selecting and concatenating rows, DPO pairs and KTO rows from groups."""

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from ugrad import errors
from ugrad import rollout as rollout_lib
from ugrad.sources import groups as groups_lib

Rollout = rollout_lib.Rollout


@dataclasses.dataclass
class Batch:
  """A step's data on the host.

  Attributes:
    rollout: a `Rollout` of numpy arrays, rows in groups of G (prompt-major).
    examples: the `Example` of each row.
    texts: the decoded completion of each row.
    metrics: source statistics (zero-signal groups, dropped groups, ...).
    failed: [B] bool, rows whose environment raised (multi-turn episodes),
      their rewards zeroed once scored; None for single-turn samples.
  """

  rollout: Rollout
  examples: list
  texts: list
  metrics: dict
  failed: Optional[np.ndarray] = None


# A reward scorer fills rewards / step_rewards / step_mask of a Batch.
Scorer = Callable[[Batch], Batch]


def select(batch: Batch, rows: Sequence[int]) -> Batch:
  """The batch restricted to `rows` (in that order)."""
  rows = np.asarray(rows, np.int64)
  rollout = jax.tree.map(lambda x: x[rows], batch.rollout)
  return Batch(
      rollout,
      [batch.examples[i] for i in rows],
      [batch.texts[i] for i in rows],
      dict(batch.metrics),
  )


def concat(batches: Sequence[Batch]) -> Batch:
  """Rows of several batches, in order (metrics of the first)."""
  rollout = jax.tree.map(
      lambda *x: np.concatenate(x), *[b.rollout for b in batches]
  )
  return Batch(
      rollout,
      sum((b.examples for b in batches), []),
      sum((b.texts for b in batches), []),
      dict(batches[0].metrics),
  )


def make_pairs(batch: Batch, group_size: int) -> Batch:
  """DPO pairs: one correct and one incorrect sample from each group.

  The chosen sample is the first with the group's highest reward, the
  rejected one the first with its lowest; groups whose rewards are all equal
  have no pair and are dropped (counted in `pairs_dropped_frac`). The batch
  keeps one pair slot per group; unused slots are blank rows.

  Returns:
    A batch of 2 rows per group: (chosen, rejected), with pair_ids and
    pair_sign set.
  """
  rewards = groups_lib.rewards(batch.rollout, group_size)
  num_groups = rewards.shape[0]
  rows, real = [], []
  for g in range(num_groups):
    best, worst = int(np.argmax(rewards[g])), int(np.argmin(rewards[g]))
    real.append(rewards[g, best] > rewards[g, worst])
    rows += [g * group_size + best, g * group_size + worst]
  out = select(batch, rows)
  blank = np.repeat(~np.asarray(real, bool), 2)
  mask = np.where(blank[:, None], 0, out.rollout.completion_mask)
  num_pairs = np.arange(num_groups, dtype=np.int32)
  out.rollout = out.rollout.replace(
      completion_mask=mask.astype(np.int32),
      pair_ids=np.repeat(num_pairs, 2),
      pair_sign=np.tile(np.array([1.0, -1.0], np.float32), num_groups),
      group_ids=np.repeat(num_pairs, 2),
  )
  out.texts = [("" if b else t) for b, t in zip(blank, out.texts)]
  out.metrics["pairs_dropped_frac"] = float(1.0 - np.mean(real))
  return out


def make_kto_rows(batch: Batch, group_size: int, prompt_len: int) -> Batch:
  """KTO rows: each sample (`pair_sign` +1) followed by its prompt with the
  completion of the same slot in the next group (-1), a mismatched pair whose
  log-ratio estimates KTO's reference point z_ref; `pair_ids` join the two.
  A pair with an empty completion is blanked (`kto_blank_frac`).

  Raises:
    UserError: with one group (no other question's completion to take).
  """
  n = len(batch.examples)
  if n <= group_size:
    raise errors.UserError(
        "sampling.kto pairs each sample with another question's completion:"
        " sampling.questions must be >= 2"
    )
  own = np.arange(n)
  out = select(batch, np.stack([own, (own + group_size) % n], 1).reshape(-1))
  r, p = out.rollout, prompt_len
  tokens = np.array(r.tokens)
  tokens[1::2, :p] = batch.rollout.tokens[:, :p]
  attention = np.array(r.attention_mask)  # A sampling source's, never None.
  attention[1::2, :p] = batch.rollout.attention_mask[:, :p]
  real = np.asarray(r.completion_mask).sum(1).reshape(n, 2).min(1) > 0
  mask = np.where(np.repeat(real, 2)[:, None], r.completion_mask, 0)
  ids = np.repeat(own.astype(np.int32), 2)
  out.rollout = r.replace(
      tokens=tokens,
      attention_mask=attention,
      completion_mask=mask.astype(np.int32),
      pair_ids=ids,
      pair_sign=np.tile(np.array([1.0, -1.0], np.float32), n),
      group_ids=ids,
  )
  out.examples[1::2] = batch.examples
  out.metrics["kto_blank_frac"] = float(1.0 - np.mean(real))
  return out
