"""Labels and scores of reward models: what a reward model is trained on and
judged by.

* ORM label: the rule reward of a sample, at its last real token.
* PRM labels (Math-Shepherd, Wang et al. 2024): each step prefix of a sample
  is continued `rollouts` times by the policy; "hard" = some continuation
  reaches the gold answer, "soft" = the fraction that do; "ground_truth" =
  the embedded task's true step labels.
* Held-out metrics: accuracy (score > 0 <=> label), AUC, positive rate.
"""

from typing import Callable

import jax
import numpy as np

from ugrad import masked
from ugrad.runtime import distributed
from ugrad.sampling import layout
from ugrad import rewards as rewards_lib
from ugrad.sampling import stats

# (prompt tokens [R, W], prompt mask [R, W], key) -> samples with `tokens`
# and `completion_mask` [R * K, W + N], K continuations per prompt. Step
# prefixes are token prefixes (part prompt, part completion), so they are
# continued as tokens, not re-encoded from text.
ContinueFn = Callable


# ---------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------


def binary_metrics(prefix: str, scores, labels, groups) -> dict:
  """Accuracy (score > 0 <=> label), its bootstrap interval over questions,
  AUC and the positive rate of labels, all named `prefix_*`."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels) > 0.5
  if scores.size == 0:
    return {}
  right = ((scores > 0) == labels).astype(np.float64)
  groups = np.asarray(groups)
  per_question = np.asarray(
      [right[groups == g].mean() for g in np.unique(groups)]
  )
  mean, low, high = stats.bootstrap_ci(per_question)
  return {
      f"{prefix}_acc": mean,
      f"{prefix}_acc_lo": low,
      f"{prefix}_acc_hi": high,
      f"{prefix}_auc": stats.auc(scores, labels),
      f"{prefix}_positive_frac": float(labels.mean()),
  }


# ---------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------


def last_token_mask(
    attention_mask: np.ndarray, completion_mask: np.ndarray
) -> np.ndarray:
  """[B, T] 1 at the last real token of each row that has a completion."""
  has = completion_mask.sum(1) > 0
  last = masked.last_token(attention_mask, np) & has[:, None]
  return last.astype(np.float32)


def step_prefixes(rollout, step_mask: np.ndarray, pad_id: int):
  """Every step prefix of a batch as one left-padded prompt batch.

  Args:
    rollout: host `Rollout` with tokens, attention_mask [B, T].
    step_mask: [B, T], 1 at the last token of each step.
    pad_id: the padding token.

  Returns:
    (rows [S], cols [S], tokens [S, T], mask [S, T]): step s ends at
    (rows[s], cols[s]); its prefix is the row's real tokens up to that
    column, right-aligned so the last column is real.
  """
  rows, cols = np.nonzero(step_mask > 0)
  tokens = np.asarray(rollout.tokens)
  attn = np.asarray(rollout.attention_mask)
  width = tokens.shape[1]
  out = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for i, (b, c) in enumerate(zip(rows, cols)):
    real = tokens[b, : c + 1][attn[b, : c + 1] > 0]
    out[i, width - len(real) :] = real
    mask[i, width - len(real) :] = 1
  return rows, cols, out, mask


def shepherd_fractions(
    task,
    batch,
    step_mask: np.ndarray,
    continue_fn: ContinueFn,
    rollouts: int,
    chunk: int,
    key,
) -> np.ndarray:
  """Math-Shepherd: the fraction of policy completions of each step prefix
  that reach the gold answer.

  All prefixes of the batch go to `continue_fn` as left-padded prompts in
  chunks of `chunk` rows (the last chunk padded with repeats, so the sampler
  keeps one compiled shape).

  Args:
    task: the `Task` (its rule reward judges prefix + completion).
    batch: a `sources.Batch` of policy samples.
    step_mask: [B, T], 1 at the last token of each step.
    continue_fn: samples `rollouts` completions per prompt.
    rollouts: K, completions per prefix.
    chunk: prefixes per `continue_fn` call.
    key: PRNG key of this batch.

  Returns:
    [B, T] float32: the fraction at each step end, 0 elsewhere.
  """
  tok = task.tokenizer
  r = batch.rollout
  rows, cols, p_tokens, p_mask = step_prefixes(r, step_mask, tok.pad_id)
  completion = np.asarray(r.completion_mask)
  tokens = np.asarray(r.tokens)
  fractions = np.zeros(len(rows), np.float32)
  for start in range(0, len(rows), chunk):
    idx = np.arange(start, min(start + chunk, len(rows)))
    padded = np.concatenate([idx, np.repeat(idx[:1], chunk - len(idx))])
    out = distributed.host_get(
        continue_fn(
            p_tokens[padded], p_mask[padded], jax.random.fold_in(key, start)
        )
    )
    ids = layout.completion_ids(
        np.asarray(out.tokens), np.asarray(out.completion_mask)
    )
    for j, i in enumerate(idx):
      b, c = rows[i], cols[i]
      head = tok.decode(tokens[b, : c + 1][completion[b, : c + 1] > 0])
      hits = [
          task.reward(batch.examples[b], head + tok.decode(x))
          for x in ids[j * rollouts : (j + 1) * rollouts]
      ]
      fractions[i] = np.mean(hits)
  out = np.zeros(step_mask.shape, np.float32)
  out[rows, cols] = fractions
  return out


def true_step_labels(task, batch) -> dict:
  """{"step_rewards": [B, T] 1/0 ground truth, "step_mask": [B, T]}."""
  return rewards_lib.ground_truth_process(
      rewards_lib.RewardContext(task), batch
  )
