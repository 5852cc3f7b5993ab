"""Reward functions: where the training signal comes from.

Each reward function maps (context, batch) to arrays for the batch's rollout:
outcome rewards `rewards` [B], or process rewards `step_rewards` [B, T] at the
last token of each step with `step_mask` [B, T].

* `none`: no reward (SFT).
* `rule`: the task's final-answer check (the embedded task's `####` answer,
  math-verify for real data).
* `model`: a learned outcome reward model, its score at the last real token.
* `process`: a learned process reward model, sigmoid of its score at the last
  token of each step.
* `ground_truth_process`: the embedded task's true step labels (1 / 0).

`token_set(ids)` makes a reward that reads token ids only, no tokenizer (the
fraction of a completion's tokens in a fixed id set): for benchmarks on a
real vocabulary without its tokenizer; register it under a name to use it.

A reward spec is a name or a weighted sum, "rule" or "rule:1.0,model:0.5".
Each entry of `REWARDS` is a `Reward`: the function and the Rollout fields
it fills. Code outside the package adds one with `ugrad.register_reward`.
"""

import dataclasses
import math
from typing import Callable, Optional

import numpy as np

from ugrad import errors
from ugrad import masked
from ugrad import registry
from ugrad import tasks as tasks_lib
from ugrad.sampling import layout

# (tokens [B, T], attention_mask [B, T]) -> float scores [B, T].
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass
class RewardContext:
  """What reward functions may use besides the batch.

  Attributes:
    task: the `Task` (rule checks, step labels, step ends).
    outcome_model: scores of the outcome reward model, or None.
    process_model: scores of the process reward model, or None.
  """

  task: object
  outcome_model: Optional[ScoreFn] = None
  process_model: Optional[ScoreFn] = None


def _completion_start(completion_mask: np.ndarray) -> np.ndarray:
  return np.argmax(completion_mask > 0, axis=1)


def step_end_mask(ctx: RewardContext, batch) -> np.ndarray:
  """[B, T] 1 at the last token of each step of each completion."""
  r = batch.rollout
  mask = np.zeros(r.tokens.shape, np.float32)
  starts = _completion_start(r.completion_mask)
  ids = layout.completion_ids(r.tokens, r.completion_mask)
  for b, text in enumerate(batch.texts):
    ends = ctx.task.step_ends(text) if text else []
    if ends:
      cols = tasks_lib.chars_to_tokens(ctx.task.tokenizer, ids[b], ends)
      mask[b, starts[b] + np.asarray(cols)] = 1.0
  return mask


def no_reward(ctx: RewardContext, batch) -> dict:
  del ctx, batch
  return {}


def rule(ctx: RewardContext, batch) -> dict:
  rewards = [
      ctx.task.reward(ex, text) if text else 0.0
      for ex, text in zip(batch.examples, batch.texts)
  ]
  return {"rewards": np.asarray(rewards, np.float32)}


def ground_truth_process(ctx: RewardContext, batch) -> dict:
  steps = step_end_mask(ctx, batch)
  values = np.zeros_like(steps)
  for b, (ex, text) in enumerate(zip(batch.examples, batch.texts)):
    if text:
      labels = ctx.task.step_labels(ex, text)
      values[b, np.flatnonzero(steps[b])] = np.asarray(labels, np.float32)
  return {"step_rewards": values, "step_mask": steps}


def _need(model, name: str, field: str):
  if model is None:
    raise errors.UserError(
        f"the {name!r} reward needs a trained reward model "
        f"(set config.{field})"
    )
  return model


def outcome_model(ctx: RewardContext, batch) -> dict:
  r = batch.rollout
  scores = _need(ctx.outcome_model, "model", "reward_model")(
      r.tokens, r.attention_mask
  )
  last = masked.last_index(np.asarray(r.attention_mask), np)
  rewards = np.asarray(scores)[np.arange(len(last)), last]
  has = r.completion_mask.sum(1) > 0  # Rows without (last may be -1): 0.
  return {"rewards": np.where(has, rewards, 0.0).astype(np.float32)}


def process_model(ctx: RewardContext, batch) -> dict:
  r = batch.rollout
  scores = _need(ctx.process_model, "process", "process_reward_model")(
      r.tokens, r.attention_mask
  )
  steps = step_end_mask(ctx, batch)
  probs = 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float64)))
  return {
      "step_rewards": np.where(steps > 0, probs, 0.0).astype(np.float32),
      "step_mask": steps,
  }


@dataclasses.dataclass(frozen=True)
class Reward:
  """A reward function and what it fills.

  Attributes:
    fn: `(context, batch) -> {field: array}` for the batch's rollout.
    fields: the Rollout fields it fills: {"rewards"} (outcome) or
      {"step_rewards", "step_mask"} (process), or none.
  """

  fn: Callable[[RewardContext, object], dict]
  fields: frozenset = frozenset()


_OUTCOME = frozenset({"rewards"})
_PROCESS = frozenset({"step_rewards", "step_mask"})


def token_set(ids) -> Reward:
  """An outcome reward on token ids alone: the fraction of each row's
  completion tokens whose id is in `ids` (0 for an empty completion).

  Raises:
    errors.UserError: `ids` is empty or holds a negative id.
  """
  ids = np.asarray(list(ids), np.int64)
  if ids.size == 0 or ids.min() < 0:
    raise errors.UserError(
        "token_set needs a non-empty set of token ids >= 0, got "
        f"{ids.size} ids" + (f", the least {ids.min()}" if ids.size else "")
    )
  table = np.zeros(int(ids.max()) + 1, bool)
  table[ids] = True

  def fn(ctx: RewardContext, batch) -> dict:
    del ctx
    tokens = np.asarray(batch.rollout.tokens)
    mask = np.asarray(batch.rollout.completion_mask) > 0
    inside = (tokens >= 0) & (tokens < len(table))
    hit = table[np.where(inside, tokens, 0)] & inside
    count = mask.sum(1)
    fraction = (hit & mask).sum(1) / np.maximum(count, 1)
    return {"rewards": fraction.astype(np.float32)}

  return Reward(fn, _OUTCOME)


REWARDS: dict[str, Reward] = {
    "none": Reward(no_reward),
    "rule": Reward(rule, _OUTCOME),
    "model": Reward(outcome_model, _OUTCOME),
    "process": Reward(process_model, _PROCESS),
    "ground_truth_process": Reward(ground_truth_process, _PROCESS),
}


def register(name: str, reward: Reward, *, replace: bool = False) -> Reward:
  """Adds a reward function; see `ugrad.register_reward`."""
  if not isinstance(reward, Reward):
    raise TypeError(
        f"reward {name!r}: expected a Reward record, got "
        f"{type(reward).__name__}"
    )
  unknown = set(reward.fields) - _OUTCOME - _PROCESS
  if unknown:
    valid = ", ".join(sorted(_OUTCOME | _PROCESS))
    raise errors.UserError(
        f"reward {name!r} fills unknown fields "
        f"{sorted(unknown)}; valid: {valid}"
    )
  return registry.register(REWARDS, "reward", name, reward, replace=replace)


def parse_spec(spec: str) -> list[tuple[str, float]]:
  """ "rule" or "rule:1.0,model:0.5" -> [(name, weight), ...].

  Raises:
    ValueError: for an unknown name (listing the valid ones) or a bad weight.
  """
  terms = []
  for part in spec.split(","):
    name, colon, weight = part.strip().partition(":")
    registry.lookup(REWARDS, "reward", name)
    try:
      value = float(weight) if colon else 1.0
    except ValueError:
      value = math.nan
    if not math.isfinite(value):
      raise errors.UserError(
          f"bad weight {weight!r} for reward {name!r} in "
          f"{spec!r}: a finite number is needed"
      )
    terms.append((name, value))
  return terms


def make_scorer(spec: str, ctx: RewardContext):
  """A function batch -> batch with the weighted rewards filled in."""
  terms = parse_spec(spec)

  def score(batch):
    total = {}
    for name, weight in terms:
      for field, value in REWARDS[name].fn(ctx, batch).items():
        if field == "step_mask":
          total[field] = np.maximum(total.get(field, 0), value)
        else:
          total[field] = total.get(field, 0) + weight * value
    # An environment's turn rewards (multi-turn episodes) are already in
    # the rollout: a process reward adds to them.
    had = batch.rollout
    if "step_rewards" in total and had.step_rewards is not None:
      total["step_rewards"] = total["step_rewards"] + had.step_rewards
      total["step_mask"] = np.maximum(total["step_mask"], had.step_mask)
    batch.rollout = batch.rollout.replace(**total)
    return batch

  return score


def provided_fields(spec: str) -> set:
  """The Rollout fields a reward spec fills."""
  return set().union(*(REWARDS[name].fields for name, _ in parse_spec(spec)))
