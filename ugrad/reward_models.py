"""Outcome and process reward models: label, train, evaluate, save.

DeepSeekMath (section 5) and Math-Shepherd (Wang et al. 2024) supervise a
reward model on samples of the policy:

* ORM: binary cross-entropy on the score at the last real token, label = the
  rule reward of the sample.
* PRM: binary cross-entropy on the score at the last token of each step.
  Math-Shepherd labels a step by completing its prefix `rollouts` times with
  the policy: "hard" = some completion reaches the gold answer, "soft" = the
  fraction that do. "ground_truth" uses the embedded task's true step labels
  (the control that says what automatic labels cost).

The reward model is a `ScalarModel` whose backbone starts from the policy in
`config.init_from` and whose head starts at zero, or, with `rm.init_from`, the
reward model saved in an earlier run, which it continues to train
(DeepSeekMath's iterative RL, Algorithm 1): then `rm.replay` of every batch
is historical data, rows drawn from what the earlier runs of the chain
trained on, and the draws continue after the earlier runs' steps. The policy
stays frozen; every draw is keyed by (seed, step), so a resumed run sees the
same data. Each step's labelled rows are kept in WORKDIR/rm_data for later
replay. The result is saved with `train.save_model(..., kind="scalar")`,
where `train.reward_model_scorer` (the `model` and `process` rewards) loads
it.
"""

import dataclasses
import json
import os
import time
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from ugrad import masked
from ugrad import metrics as metrics_lib
from ugrad import models
from ugrad import rewards as rewards_lib
from ugrad import sampling
from ugrad import sources as sources_lib
from ugrad import stats
from ugrad import tasks as tasks_lib
from ugrad import train
from ugrad.sources import layout

KINDS = ("orm", "prm")
LABELS = ("hard", "soft", "ground_truth")
# Keys of the held-out draw and of Math-Shepherd completions, apart from the
# training draws (which use fold_in(seed, step)).
_EVAL_STEP = 2**31 - 2
_SHEPHERD_SALT = 1_000_003
_REPLAY_SALT = 1_000_033
DATA_DIR = "rm_data"  # one .npz of labelled training rows per step

# (prompt tokens [R, W], prompt mask [R, W], key) -> samples with `tokens`
# and `completion_mask` [R * K, W + N], K continuations per prompt.
ContinueFn = Callable


# ---------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------


def _binary_metrics(prefix: str, scores, labels, groups) -> dict:
  """Accuracy (score > 0 <=> label), its bootstrap interval over questions,
  AUC and the positive rate of labels, all named `prefix_*`."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels) > 0.5
  if scores.size == 0:
    return {}
  right = ((scores > 0) == labels).astype(np.float64)
  groups = np.asarray(groups)
  per_question = np.asarray([right[groups == g].mean()
                             for g in np.unique(groups)])
  mean, low, high = stats.bootstrap_ci(per_question)
  return {f"{prefix}_acc": mean, f"{prefix}_acc_lo": low,
          f"{prefix}_acc_hi": high, f"{prefix}_auc": stats.auc(scores, labels),
          f"{prefix}_positive_frac": float(labels.mean())}


# ---------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------


def last_token_mask(attention_mask: np.ndarray,
                    completion_mask: np.ndarray) -> np.ndarray:
  """[B, T] 1 at the last real token of each row that has a completion."""
  t = attention_mask.shape[1]
  last = np.max(np.where(attention_mask > 0, np.arange(t), 0), axis=1)
  out = np.zeros(attention_mask.shape, np.float32)
  has = completion_mask.sum(1) > 0
  out[np.flatnonzero(has), last[has]] = 1.0
  return out


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
    real = tokens[b, :c + 1][attn[b, :c + 1] > 0]
    out[i, width - len(real):] = real
    mask[i, width - len(real):] = 1
  return rows, cols, out, mask


def shepherd_fractions(task, batch, step_mask: np.ndarray,
                       continue_fn: ContinueFn, rollouts: int,
                       chunk: int, key) -> np.ndarray:
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
    out = jax.device_get(continue_fn(p_tokens[padded], p_mask[padded],
                                     jax.random.fold_in(key, start)))
    ids = layout.completion_ids(np.asarray(out.tokens),
                                np.asarray(out.completion_mask))
    for j, i in enumerate(idx):
      b, c = rows[i], cols[i]
      head = tok.decode(tokens[b, :c + 1][completion[b, :c + 1] > 0])
      hits = [task.reward(batch.examples[b], head + tok.decode(x))
              for x in ids[j * rollouts:(j + 1) * rollouts]]
      fractions[i] = np.mean(hits)
  out = np.zeros(step_mask.shape, np.float32)
  out[rows, cols] = fractions
  return out


def true_step_labels(task, batch) -> dict:
  """{"step_rewards": [B, T] 1/0 ground truth, "step_mask": [B, T]}."""
  return rewards_lib.ground_truth_process(rewards_lib.RewardContext(task),
                                          batch)


# ---------------------------------------------------------------------------
# The jitted functions.
# ---------------------------------------------------------------------------


def make_update(graphdef, optimizer):
  """The jitted step: BCE (soft targets allowed) on masked scores.

  (params, opt_state, tokens [B, T], attention_mask [B, T], targets [B, T],
  label_mask [B, T]) -> (params, opt_state, metrics).
  """

  def loss_fn(params, tokens, attention_mask, targets, label_mask):
    scores = nnx.merge(graphdef, params)(tokens, attention_mask)
    bce = optax.sigmoid_binary_cross_entropy(scores, targets)
    agree = ((scores > 0) == (targets > 0.5)).astype(jnp.float32)
    return masked.masked_mean(bce, label_mask), masked.masked_mean(
        agree, label_mask)

  def update(params, opt_state, tokens, attention_mask, targets, label_mask):
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, tokens, attention_mask, targets, label_mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics = {"loss": loss, "train_acc": acc,
               "grad_norm": optax.tree.norm(grads)}
    return optax.apply_updates(params, updates), opt_state, metrics

  return jax.jit(update, donate_argnums=(0, 1))


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------


def validate(config) -> None:
  """Refuses a reward-model config that cannot work, saying why."""
  rm = config.rm
  if rm.kind not in KINDS:
    raise ValueError(f"unknown reward model kind {rm.kind!r}; valid: "
                     f"{', '.join(KINDS)}")
  if rm.kind == "prm" and rm.label not in LABELS:
    raise ValueError(f"unknown PRM label {rm.label!r}; valid: "
                     f"{', '.join(LABELS)}")
  for field in ("rollouts", "prefix_batch", "eval_questions"):
    if rm[field] < 1:
      raise ValueError(f"config.rm.{field} must be >= 1, got {rm[field]}")
  if not 0.0 <= rm.replay < 1.0:
    raise ValueError(f"config.rm.replay must be in [0, 1), got {rm.replay}")
  if rm.replay and not rm.init_from:
    raise ValueError("config.rm.replay draws from the data of earlier runs: "
                     "set config.rm.init_from to the reward model to continue")
  if rm.init_from:
    previous = run_chain(rm.init_from)[0]
    if previous.rm.kind != rm.kind:
      raise ValueError(f"config.rm.init_from={rm.init_from} holds a reward "
                       f"model of kind {previous.rm.kind!r}, not "
                       f"{rm.kind!r}")
  if config.sampling.group_size < 1 or config.sampling.questions < 1:
    raise ValueError("sampling.questions and sampling.group_size must be >= 1")
  if not config.init_from and config.task != "arithmetic":
    raise ValueError(f"a reward model on task {config.task!r} starts from a "
                     "policy: set config.init_from")


# ---------------------------------------------------------------------------
# Continued training: the chain of earlier runs and their data.
# ---------------------------------------------------------------------------


def run_chain(workdir: str) -> list[ml_collections.ConfigDict]:
  """The configs of a finished reward-model run and of the runs it
  continued (`rm.init_from`), newest first.

  Raises:
    FileNotFoundError: when a run of the chain has not finished.
  """
  chain = []
  while workdir:
    if not os.path.exists(os.path.join(workdir, train.MODEL_FILE)):
      raise FileNotFoundError(f"{workdir} holds no finished reward model "
                              f"({train.MODEL_FILE} is missing)")
    with open(os.path.join(workdir, train.CONFIG_FILE)) as f:
      chain.append(ml_collections.ConfigDict(json.load(f)))
    workdir = chain[-1].rm.get("init_from", "")
  return chain


def history(workdir: str) -> dict:
  """The labelled rows every run of the chain ending at `workdir` trained
  on (replayed rows excluded): "tokens", "attention_mask" [N, T] int32,
  "targets", "label_mask" [N, T] float32."""
  chain = run_chain(workdir)
  dirs = [workdir] + [c.rm.init_from for c in chain[:-1]]
  parts = []
  for directory in dirs:
    data_dir = os.path.join(directory, DATA_DIR)
    if not os.path.isdir(data_dir):
      raise FileNotFoundError(f"{directory} kept no training data to replay "
                              f"({DATA_DIR}/ is missing)")
    for name in sorted(os.listdir(data_dir)):
      with np.load(os.path.join(data_dir, name)) as rows:
        parts.append(dict(rows))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def replay_rows(fresh_rows: int, replay: float) -> int:
  """Historical rows added to `fresh_rows` so they make up `replay` of the
  batch."""
  return int(round(fresh_rows * replay / (1.0 - replay)))


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


class RewardModelTrainer:
  """Trains an ORM or PRM on samples of a frozen policy (resuming)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate(config)
    train.validate(config)  # names, batch split, init_from off the task
    self.config = config
    self.kind = config.rm.kind
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.task = train.make_task(config)
    self._init_models()
    self.prompt_len = train.prompt_length(self.task)
    self.max_new = config.sampling.max_new_tokens
    self._init_samplers()
    self._init_state()
    self._eval_cache = None

  def _init_models(self):
    config = self.config
    if not config.init_from:
      config.init_from = train.warm_start(config, self.workdir)
    graphdef, params, hf_tokenizer = train.load_policy(config.init_from)
    if hf_tokenizer is not None:
      if config.task == "arithmetic":
        raise ValueError("a Hugging Face policy cannot score the embedded "
                         "task's character vocabulary")
      self.task.tokenizer = hf_tokenizer
    model_config = dataclasses.replace(
        nnx.merge(graphdef, params).config, dtype=train.compute_dtype(config))
    abstract = nnx.eval_shape(
        lambda: models.Transformer(model_config, rngs=nnx.Rngs(0)))
    self.policy_graphdef = nnx.split(abstract, nnx.Param)[0]
    self.policy_params = params
    self.model_config = model_config
    self.graphdef, self.init_params = train.scalar_from_policy(
        model_config, params, config.seed)
    self.data_offset, self.history = 0, None
    if config.rm.init_from:
      _, self.init_params = train.load_model(config.rm.init_from, "scalar")
      self.data_offset = sum(c.steps for c in run_chain(config.rm.init_from))
      if config.rm.replay:
        self.history = history(config.rm.init_from)

  def _sampler(self, num_samples: int):
    cfg = sampling.SamplingConfig(
        max_new_tokens=self.max_new, eos_id=self.task.tokenizer.eos_id,
        pad_id=self.task.tokenizer.pad_id, num_samples=num_samples,
        temperature=self.config.sampling.temperature)
    graphdef = self.policy_graphdef
    return lambda params, tokens, mask, key: sampling.sample(
        graphdef, params, tokens, mask, key, cfg)

  def _init_samplers(self):
    config = self.config
    self.source = sources_lib.OnlineSource(
        self.task, sampler=self._sampler(config.sampling.group_size),
        questions=config.sampling.questions,
        group_size=config.sampling.group_size, prompt_len=self.prompt_len,
        seed=config.seed)
    sample_k = self._sampler(config.rm.rollouts)
    params = self.policy_params
    self.continue_fn = lambda tokens, mask, key: sample_k(
        params, tokens, mask, key)
    graphdef = self.graphdef
    self.scores = jax.jit(lambda p, t, m: nnx.merge(graphdef, p)(t, m))

  def _init_state(self):
    config = self.config
    self.optimizer = train.make_optimizer(config.optim)
    params = jax.tree.map(jnp.copy, self.init_params)
    state = {"params": params,
             "opt_state": jax.jit(self.optimizer.init)(params)}
    self.update = make_update(self.graphdef, self.optimizer)
    self.checkpointer, self.start_step, self.state, _ = (
        train.open_checkpoints(config, self.workdir, state))

  # --- data ----------------------------------------------------------------

  def _label(self, batch, step: int):
    """Fills the batch's labels: `rewards` [B] (ORM) or `step_rewards` and
    `step_mask` [B, T] (PRM); returns label statistics."""
    ctx = rewards_lib.RewardContext(self.task)
    if self.kind == "orm":
      rewards = rewards_lib.rule(ctx, batch)["rewards"]
      batch.rollout = batch.rollout.replace(rewards=rewards)
      return {"label_mean": float(rewards.mean())}
    label = self.config.rm.label
    if label == "ground_truth":
      truth = true_step_labels(self.task, batch)
      targets, mask = truth["step_rewards"], truth["step_mask"]
    else:
      mask = rewards_lib.step_end_mask(ctx, batch)
      key = jax.random.fold_in(
          jax.random.key(self.config.seed + _SHEPHERD_SALT), step)
      soft = shepherd_fractions(self.task, batch, mask, self.continue_fn,
                                self.config.rm.rollouts,
                                self.config.rm.prefix_batch, key)
      targets = soft if label == "soft" else (soft > 0).astype(np.float32)
    batch.rollout = batch.rollout.replace(step_rewards=targets,
                                          step_mask=mask)
    metrics = self._label_stats(targets, mask)
    if label != "ground_truth":
      metrics.update(self._label_quality(batch, targets, mask))
    return metrics

  def _targets(self, rollout):
    """(targets [B, T], label_mask [B, T]) of a labelled rollout."""
    if self.kind == "orm":
      mask = last_token_mask(np.asarray(rollout.attention_mask),
                             np.asarray(rollout.completion_mask))
      return mask * np.asarray(rollout.rewards)[:, None], mask
    return (np.asarray(rollout.step_rewards, np.float32),
            np.asarray(rollout.step_mask, np.float32))

  @staticmethod
  def _label_stats(targets, mask) -> dict:
    on = mask > 0
    return {"label_mean": float(targets[on].mean()) if on.any() else 0.0,
            "steps_per_sample": float(on.sum() / len(mask))}

  def _label_quality(self, batch, targets, mask) -> dict:
    """Agreement of automatic step labels with the ground truth, where the
    task has it."""
    try:
      truth = true_step_labels(self.task, batch)["step_rewards"]
    except NotImplementedError:
      return {}
    on = mask > 0
    if not on.any():
      return {}
    return {"label_truth_agreement": float(np.mean(
        (targets[on] > 0.5) == (truth[on] > 0.5)))}

  # --- one step -------------------------------------------------------------

  def train_step(self, step: int) -> dict:
    start = time.perf_counter()
    label_metrics = {}

    def score(batch):
      label_metrics.update(self._label(batch, step))
      return batch

    batch = self.source.draw(self.policy_params, self.data_offset + step,
                             score)
    targets, label_mask = self._targets(batch.rollout)
    r = batch.rollout
    rows = {"tokens": np.asarray(r.tokens, np.int32),
            "attention_mask": np.asarray(r.attention_mask, np.int32),
            "targets": np.asarray(targets, np.float32),
            "label_mask": np.asarray(label_mask, np.float32)}
    self._record(step, rows)
    rows = self._with_replay(step, rows)
    params, opt_state, metrics = self.update(
        self.state["params"], self.state["opt_state"], rows["tokens"],
        rows["attention_mask"], rows["targets"], rows["label_mask"])
    self.state = {"params": params, "opt_state": opt_state}
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not np.isfinite(metrics["loss"]):
      raise FloatingPointError(f"reward-model loss is {metrics['loss']} at "
                               f"step {step + 1}")
    metrics.update(label_metrics)
    metrics["step_time_s"] = time.perf_counter() - start
    return metrics

  def _record(self, step: int, rows: dict):
    """Keeps the step's fresh labelled rows for later replay."""
    data_dir = os.path.join(self.workdir, DATA_DIR)
    os.makedirs(data_dir, exist_ok=True)
    np.savez_compressed(os.path.join(data_dir, f"step_{step:07d}.npz"),
                        **rows)

  def _with_replay(self, step: int, rows: dict) -> dict:
    """`rows` plus historical rows drawn by (seed, step), so that they make
    up `rm.replay` of the batch."""
    if self.history is None:
      return rows
    n = replay_rows(len(rows["tokens"]), self.config.rm.replay)
    available, width = self.history["tokens"].shape
    if width != rows["tokens"].shape[1]:
      raise ValueError(f"replayed rows of {self.config.rm.init_from} have "
                       f"{width} tokens, this run's have "
                       f"{rows['tokens'].shape[1]}: the task or "
                       "sampling.max_new_tokens changed")
    idx = np.random.default_rng(
        [self.config.seed, step, _REPLAY_SALT]).choice(available, size=n,
                                                       replace=n > available)
    return {k: np.concatenate([v, self.history[k][idx]])
            for k, v in rows.items()}

  # --- evaluation -----------------------------------------------------------

  def _eval_batch(self):
    """G fresh samples of the policy for held-out questions (drawn once:
    the policy is frozen)."""
    if self._eval_cache is None:
      tok = self.task.tokenizer
      test = self.task.examples("test")
      n = min(self.config.rm.eval_questions, len(test))
      examples = [test[i] for i in range(n)]
      g = self.config.sampling.group_size
      prompts = [tasks_lib.encode_prompt(tok, self.task.prompt(ex))
                 for ex in examples]
      p_tokens, p_mask = layout.pack_prompts(prompts, self.prompt_len,
                                             tok.pad_id)
      key = jax.random.fold_in(jax.random.key(self.config.seed), _EVAL_STEP)
      out = jax.device_get(self.source.sampler(self.policy_params, p_tokens,
                                               p_mask, key))
      rollout = sources_lib.Rollout(
          tokens=np.asarray(out.tokens, np.int32),
          attention_mask=np.asarray(out.attention_mask, np.int32),
          completion_mask=np.asarray(out.completion_mask, np.int32),
          group_ids=np.arange(n * g, dtype=np.int32) // g)
      ids = layout.completion_ids(rollout.tokens, rollout.completion_mask)
      self._eval_cache = sources_lib.Batch(
          rollout, [ex for ex in examples for _ in range(g)],
          [tok.decode(x) for x in ids], {})
    return self._eval_cache

  def evaluate(self, params=None) -> dict:
    """ORM: accuracy / AUC of the last-token score against the rule reward.

    PRM: step accuracy / AUC against the ground-truth step labels, and the
    solution score (min over steps) against the rule reward.
    """
    params = self.state["params"] if params is None else params
    batch = self._eval_batch()
    r = batch.rollout
    scores = np.asarray(self.scores(params, r.tokens, r.attention_mask))
    rewards = rewards_lib.rule(rewards_lib.RewardContext(self.task),
                               batch)["rewards"]
    groups = np.asarray(r.group_ids)
    if self.kind == "orm":
      last = last_token_mask(np.asarray(r.attention_mask),
                             np.asarray(r.completion_mask))
      rows, cols = np.nonzero(last)
      return _binary_metrics("orm", scores[rows, cols], rewards[rows],
                             groups[rows])
    return self._prm_metrics(batch, scores, rewards, groups)

  def _prm_metrics(self, batch, scores, rewards, groups) -> dict:
    mask = rewards_lib.step_end_mask(rewards_lib.RewardContext(self.task),
                                     batch)
    rows, cols = np.nonzero(mask)
    out = {}
    try:
      truth = true_step_labels(self.task, batch)["step_rewards"]
      out.update(_binary_metrics("step", scores[rows, cols],
                                 truth[rows, cols], groups[rows]))
    except NotImplementedError:
      pass
    has = mask.sum(1) > 0
    solution = np.where(mask > 0, scores, np.inf).min(1)
    out.update(_binary_metrics("solution", solution[has], rewards[has],
                               groups[has]))
    return out

  # --- the loop -------------------------------------------------------------

  def train(self) -> dict:
    """Runs the remaining steps, saves the model; returns the last metrics."""
    config = self.config
    writer = metrics_lib.MetricsWriter(self.workdir,
                                       resume_step=self.start_step)
    with open(os.path.join(self.workdir, train.CONFIG_FILE), "w") as f:
      f.write(config.to_json(indent=2))
    metrics = {}
    bar = tqdm.tqdm(total=config.steps, initial=self.start_step,
                    desc=config.method, disable=config.quiet)
    try:
      for step in range(self.start_step, config.steps):
        metrics = self.train_step(step)
        if config.eval_every and (step + 1) % config.eval_every == 0:
          metrics.update(self.evaluate())
        writer.write(step + 1, metrics)
        last = step + 1 == config.steps
        self.checkpointer.save(
            step + 1, self.state,
            {"step": step + 1, "data_position": step + 1,
             "config": config.to_json()}, force=last, wait=last)
        bar.update(1)
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("loss",)})
    finally:
      bar.close()
      writer.close()
      self.checkpointer.wait_until_finished()
    train.save_model(self.workdir, self.state["params"], self.model_config,
                     kind="scalar")
    return metrics


def train_reward_model(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains (or resumes) the reward model of `config` in `workdir`, saves it
  where `train.reward_model_scorer(workdir)` loads it, and returns the last
  step's metrics with a final evaluation."""
  trainer = RewardModelTrainer(config, workdir)
  metrics = trainer.train()
  return dict(metrics, **trainer.evaluate())
