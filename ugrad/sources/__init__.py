"""Data sources: where the (question, output) pairs of a step come from.

* `dataset`: gold (question, solution) pairs of the task (SFT).
* `frozen_policy`: samples of a fixed policy (pi_sft), drawn once for a pool
  of questions and cached in the workdir (RFT, DPO).
* `online`: samples of the current parameters at every step (online RFT, PPO,
  GRPO).

Every source returns a `Batch` whose rollout has the fixed [B, P + N] layout
of `layout.pack`. Draws are a pure function of (seed, step), so a resumed run
sees exactly the data an uninterrupted one would.

A source class declares what it gives, for the start-up check that compares
it with what the coefficient needs: `samples` (it samples a policy, so its
completions need a reward), `frozen` (it samples the initial policy, not the
current one) and `provides(pairs)`, the optional Rollout fields it fills.
Code outside the package adds a source with `ugrad.register_source`.
"""

import dataclasses
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from ugrad import errors
from ugrad.runtime import distributed
from ugrad.runtime import paths
from ugrad import registry
from ugrad import rollout as rollout_lib
from ugrad import sampling
from ugrad import tasks as tasks_lib
from ugrad.sampling import layout
from ugrad.sources import batch as batch_lib
from ugrad.sources import groups as groups_lib

Rollout = rollout_lib.Rollout
Batch = batch_lib.Batch
Scorer = batch_lib.Scorer
select = batch_lib.select
concat = batch_lib.concat
make_pairs = batch_lib.make_pairs
make_kto_rows = batch_lib.make_kto_rows

# The "step" under which the frozen-policy pool is drawn, distinct from every
# training step.
_POOL_STEP = 2**31 - 1


def _step_rng(seed: int, step: int, attempt: int = 0) -> np.random.Generator:
  return np.random.default_rng([seed, step, attempt])


class DatasetSource:
  """Gold (question, completion) pairs of the task's training split."""

  samples = False
  frozen = False

  @staticmethod
  def provides(pairs: bool) -> set:
    del pairs
    return set()

  def __init__(
      self,
      task,
      *,
      batch_size: int,
      prompt_len: int,
      completion_len: int,
      seed: int,
      **unused,
  ):
    del unused
    self.task = task
    self.batch_size = batch_size
    self.prompt_len = prompt_len
    self.completion_len = completion_len
    self.seed = seed
    self.group_size = 1

  def draw(self, params, step: int, score: Optional[Scorer] = None) -> Batch:
    del params
    train = self.task.examples("train")
    idx = _step_rng(self.seed, step).integers(len(train), size=self.batch_size)
    examples = [train[int(i)] for i in idx]
    encoded = [tasks_lib.encode_example(self.task, ex) for ex in examples]
    arrays = layout.pack(
        [p for p, _ in encoded],
        [c for _, c in encoded],
        self.prompt_len,
        self.completion_len,
        self.task.tokenizer.pad_id,
    )
    texts = [self.task.completion(ex) for ex in examples]
    batch = Batch(Rollout(**arrays), examples, texts, {})
    return score(batch) if score is not None else batch


class OnlineSource:
  """G samples per question from the current parameters, every step.

  Options: `pairs` builds DPO pairs from each group; `kto` follows each
  sample with a mismatched row (`make_kto_rows`); `dynamic` drops groups
  whose rewards are all equal and draws again (at most `max_draws` draws in
  all) until the batch is full (DAPO's dynamic sampling); when the bound is
  reached the batch is filled with dropped groups, which carry no signal, and
  `dynamic_fill_frac` says how many.
  """

  samples = True
  frozen = False

  @staticmethod
  def provides(pairs: bool) -> set:
    fields = {"logp_old", "group_ids"}
    return fields | {"pair_ids", "pair_sign"} if pairs else fields

  def __init__(
      self,
      task,
      *,
      sampler: sampling.Sampler,
      questions: int,
      group_size: int,
      prompt_len: int,
      seed: int,
      pairs: bool = False,
      kto: bool = False,
      dynamic: bool = False,
      max_draws: int = 4,
      **unused,
  ):
    del unused
    self.task = task
    self.sampler = sampler
    self.questions = questions
    self.group_size = group_size
    self.prompt_len = prompt_len
    self.seed = seed
    self.pairs = pairs
    self.kto = kto
    self.dynamic = dynamic
    self.max_draws = max_draws if dynamic else 1

  def _sample(self, params, examples, key) -> Batch:
    """G samples of each question (whole episodes with an `EpisodeSampler`,
    the environment's turn rewards as step rewards, `failed` rows set)."""
    prompts = [self.task.prompt(ex) for ex in examples]
    if getattr(self.sampler, "episodic", False):
      out = self.sampler(params, prompts, key, examples=examples)
    else:
      out = self.sampler(params, prompts, key)
    g = self.group_size
    rollout = Rollout(
        tokens=out.tokens,
        attention_mask=out.attention_mask,
        completion_mask=out.completion_mask,
        logp_old=out.logp,
        step_rewards=getattr(out, "step_rewards", None),
        step_mask=getattr(out, "step_mask", None),
        group_ids=np.arange(len(examples) * g, dtype=np.int32) // g,
    )
    batch = Batch(
        rollout, [ex for ex in examples for _ in range(g)], out.texts, {}
    )
    if getattr(self.sampler, "episodic", False):
      batch.metrics = sampling.episode_metrics(out)
      batch.failed = out.failed
    return batch

  @staticmethod
  def _scored(score: Scorer, batch: Batch) -> Batch:
    """`score(batch)`, then zero rewards on the rows whose episode failed."""
    failed = batch.failed
    batch = score(batch)
    if failed is not None and failed.any():
      r = batch.rollout
      zero = {
          k: np.where(failed.reshape((-1,) + (1,) * (v.ndim - 1)), 0, v).astype(
              v.dtype
          )
          for k, v in (("rewards", r.rewards), ("step_rewards", r.step_rewards))
          if v is not None
      }
      batch.rollout = r.replace(**zero)
    return batch

  def _questions(self, step: int, attempt: int) -> list:
    train = self.task.examples("train")
    idx = _step_rng(self.seed, step, attempt).integers(
        len(train), size=self.questions
    )
    return [train[int(i)] for i in idx]

  def draw(self, params, step: int, score: Scorer) -> Batch:
    key = jax.random.fold_in(jax.random.key(self.seed), step)
    return self._assemble(
        lambda attempt: self._scored(
            score,
            self._sample(
                params,
                self._questions(step, attempt),
                jax.random.fold_in(key, attempt),
            ),
        )
    )

  def _assemble(self, draw_once: Callable[[int], Batch]) -> Batch:
    """Draws groups (dynamic: until enough carry signal) into one batch."""
    kept, dropped, draws = [], [], 0
    while draws < self.max_draws and sum(len(k) for _, k in kept) < (
        self.questions
    ):
      batch = draw_once(draws)
      draws += 1
      every = np.arange(self.questions)
      varied = groups_lib.varied(batch.rollout, self.group_size)
      if not self.dynamic:
        kept.append((batch, every))
        break
      kept.append((batch, varied))
      dropped.append((batch, np.setdiff1d(every, varied)))
    parts, have, filled = [], 0, 0
    for source in (kept, dropped):
      for part, groups in source:
        take = groups[: self.questions - have]
        if len(take):
          parts.append(select(part, groups_lib.rows(take, self.group_size)))
          have += len(take)
      if source is kept:
        filled = self.questions - have
    batch = concat(parts)
    g = self.group_size
    batch.rollout = batch.rollout.replace(
        group_ids=np.arange(self.questions * g, dtype=np.int32) // g
    )
    flat_groups = self.questions - len(groups_lib.varied(batch.rollout, g))
    batch.metrics = {
        **batch.metrics,
        "zero_signal_group_frac": flat_groups / self.questions,
        "draws": float(draws),
    }
    if self.dynamic:
      batch.metrics["dynamic_fill_frac"] = filled / self.questions
    if self.pairs:
      batch = make_pairs(batch, g)
    if self.kto:
      batch = make_kto_rows(batch, g, self.prompt_len)
    return batch


class FrozenPolicySource(OnlineSource):
  """Samples of the initial (SFT) policy, drawn once and cached.

  At the first step the policy samples G completions for `pool_questions`
  training questions; the pool is saved to `workdir/frozen_pool.npz` and
  reused by later steps and by resumed runs. Each step takes `questions`
  groups of the pool, chosen by (seed, step). Rewards are scored per step
  (a learned reward model may change between steps).
  """

  frozen = True

  def __init__(self, task, *, workdir: str, pool_questions: int, **kwargs):
    super().__init__(task, **kwargs)
    self.path = paths.resolve(workdir) / "frozen_pool.npz"
    self.pool_questions = pool_questions
    self._pool: Optional[Batch] = None

  def _made_with(self) -> list:
    return [self.seed, self.group_size, self.pool_questions]

  def _build_pool(self, params) -> Batch:
    if self.path.exists():
      with self.path.open("rb") as file, np.load(file) as f:
        fields = {k: f[k] for k in f.files}
      question_idx = fields.pop("question_idx")
      made_with = fields.pop("made_with").tolist()
      if made_with != self._made_with():
        raise errors.UserError(
            f"{self.path} was sampled with (seed, group_size, "
            f"pool_questions) = {made_with}, not {self._made_with()}: use "
            "another workdir or delete the pool to sample a new one"
        )
      logging.info("Loaded the frozen-policy pool from %s", self.path)
    else:
      rng = _step_rng(self.seed, _POOL_STEP)
      train = self.task.examples("train")
      question_idx = rng.choice(
          len(train),
          self.pool_questions,
          replace=len(train) < self.pool_questions,
      )
      key = jax.random.fold_in(jax.random.key(self.seed), _POOL_STEP)
      parts = []
      for start in range(0, self.pool_questions, self.questions):
        chunk = question_idx[start : start + self.questions]
        examples = [train[int(i)] for i in chunk]
        if len(examples) < self.questions:  # keep one compiled shape
          examples += examples[:1] * (self.questions - len(examples))
        part = self._sample(params, examples, jax.random.fold_in(key, start))
        parts.append(select(part, np.arange(len(chunk) * self.group_size)))
      pool = concat(parts)
      fields = {
          k: v
          for k, v in dataclasses.asdict(pool.rollout).items()
          if v is not None
      }
      if distributed.is_main():
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
          np.savez(
              f,
              question_idx=question_idx,
              made_with=np.asarray(self._made_with()),
              **fields,
          )
        tmp.replace(self.path)
      distributed.sync("frozen_pool")
      logging.info("Sampled and cached the frozen-policy pool at %s", self.path)
    train = self.task.examples("train")
    rollout = Rollout(**fields)
    g = self.group_size
    ids = layout.completion_ids(rollout.tokens, rollout.completion_mask)
    texts = [self.task.tokenizer.decode(x) for x in ids]
    examples = [train[int(i)] for i in question_idx for _ in range(g)]
    return Batch(rollout, examples, texts, {})

  def draw(self, params, step: int, score: Scorer) -> Batch:
    if self._pool is None:
      self._pool = self._build_pool(params)
    num_groups = len(self._pool.examples) // self.group_size

    def draw_once(attempt):
      groups = _step_rng(self.seed, step, attempt).choice(
          num_groups, self.questions, replace=num_groups < self.questions
      )
      return score(select(self._pool, groups_lib.rows(groups, self.group_size)))

    return self._assemble(draw_once)


SOURCES = {
    "dataset": DatasetSource,
    "frozen_policy": FrozenPolicySource,
    "online": OnlineSource,
}


def get(name: str):
  """The source class called `name` (the error lists the valid ones)."""
  return registry.lookup(SOURCES, "source", name)


def register(name: str, source_cls, *, replace: bool = False):
  """Adds a source class; see `ugrad.register_source`."""
  for attr in ("samples", "frozen", "provides", "draw"):
    if not hasattr(source_cls, attr):
      raise TypeError(
          f"source {name!r} lacks {attr!r}: a source class "
          "declares samples, frozen, provides(pairs) and "
          "draw(params, step, score)"
      )
  return registry.register(SOURCES, "source", name, source_cls, replace=replace)
