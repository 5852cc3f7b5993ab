"""Outcome and process reward models, trained by the same loop as policies.

DeepSeekMath (section 5) and Math-Shepherd (Wang et al. 2024) supervise a
reward model on samples of the policy; `ugrad.training.reward_labels` makes
the labels. A reward-model run (`config.trainer = "reward_model"`) is a
`ugrad.training.trainer.Trainer` whose learner is `RewardModelLearner`: the
model is a `ScalarModel` (the policy's backbone, a zero head), the loss
target is binary cross-entropy on the labelled positions (`label_loss`), so
the run gets the mesh, micro-batches, the gradient log and exact resume of
every run.

The reward model starts from the policy in `config.init_from` or, with
`rm.init_from`, from the reward model saved in an earlier run, which it
continues to train (DeepSeekMath's iterative RL, Algorithm 1): then
`rm.replay` of every batch is historical data, rows drawn from what the
earlier runs of the chain trained on, and the draws continue after the
earlier runs' steps. The policy stays frozen; every draw is keyed by
(seed, step), so a resumed run sees the same data. Each step's labelled rows
are kept in WORKDIR/rm_data for later replay. The result is saved as a
scalar model, which `ugrad.training.runs.reward_model_scorer` (the `model`
and `process` rewards) loads.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ugrad import errors
from ugrad.training import build
from ugrad import masked
from ugrad import registry
from ugrad import rewards as rewards_lib
from ugrad import rollout as rollout_lib
from ugrad.training import learner as learner_lib
from ugrad.training import reward_data
from ugrad.training import runs
from ugrad import sampling
from ugrad import sources as sources_lib
from ugrad.training import reward_labels as labels_lib

KINDS = ("orm", "prm")
LABELS = ("hard", "soft", "ground_truth")
# Keys of the held-out draw and of Math-Shepherd completions, apart from the
# training draws (which use fold_in(seed, step)).
_EVAL_STEP = 2**31 - 2
_SHEPHERD_SALT = 1_000_003


def label_loss(graphdef):
  """BCE (soft targets allowed) of a scalar model's scores, as a LossFn:
  the batch's `step_rewards` are the targets and `step_mask` marks the
  labelled positions (the last token for an ORM, step ends for a PRM)."""

  def loss(params, batch):
    scores = nnx.merge(graphdef, params)(batch.tokens, batch.attention_mask)
    targets, mask = batch.step_rewards, batch.step_mask
    bce = optax.sigmoid_binary_cross_entropy(scores, targets)
    agree = ((scores > 0) == (targets > 0.5)).astype(jnp.float32)
    return jnp.sum(bce * mask), (
        jnp.sum(mask),
        {"train_acc": masked.masked_mean(agree, mask)},
    )

  return loss


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------


def check_config(config) -> None:
  """Refuses a reward-model config that cannot work, saying why."""
  rm = config.rm
  registry.lookup(KINDS, "reward model kind", rm.kind)
  if rm.kind == "prm":
    registry.lookup(LABELS, "PRM label", rm.label)
  for field in ("rollouts", "prefix_batch", "eval_questions"):
    if rm[field] < 1:
      raise errors.UserError(f"config.rm.{field} must be >= 1, got {rm[field]}")
  if not 0.0 <= rm.replay < 1.0:
    raise errors.UserError(
        f"config.rm.replay must be in [0, 1), got {rm.replay}"
    )
  if rm.replay and not rm.init_from:
    raise errors.UserError(
        "config.rm.replay draws from the data of earlier runs: set "
        "config.rm.init_from to the reward model to continue"
    )
  if rm.init_from:
    previous = reward_data.run_chain(rm.init_from)[0]
    if previous.rm.kind != rm.kind:
      raise errors.UserError(
          f"config.rm.init_from={rm.init_from} holds a reward model of kind "
          f"{previous.rm.kind!r}, not {rm.kind!r}"
      )
  if config.sampling.group_size < 1 or config.sampling.questions < 1:
    raise errors.UserError(
        "sampling.questions and sampling.group_size must be >= 1"
    )
  if not config.init_from and config.task != "arithmetic":
    raise errors.UserError(
        f"a reward model on task {config.task!r} starts from a policy: set "
        "config.init_from"
    )


# ---------------------------------------------------------------------------
# The learner.
# ---------------------------------------------------------------------------


class RewardModelLearner:
  """The reward model's side of a run (a `learner.Learner`): labelled
  samples of the frozen policy in, a scalar model out."""

  chunk = 1  # rows are independent (replayed rows join them)
  frozen = None  # every parameter trains

  def __init__(self, context: learner_lib.RunContext):
    self.context = context
    config = self.config = context.config
    self.kind = config.rm.kind
    self.task = context.task
    policy = context.policy
    self.policy_params = context.init_params
    self.graphdef, self.init_params = build.scalar_from_policy(
        policy.model_config, self.policy_params, config.seed, context.mesh
    )
    self.data_offset, self.history = 0, None
    if config.rm.init_from:
      _, self.init_params = runs.load_model(
          config.rm.init_from,
          "scalar",
          jax.tree.map(lambda x: x.sharding, self.init_params),
      )
      self.data_offset = sum(
          c.steps for c in reward_data.run_chain(config.rm.init_from)
      )
      if config.rm.replay:
        self.history = reward_data.history(config.rm.init_from)
    self.source = sources_lib.OnlineSource(
        self.task,
        sampler=self._sampler(config.sampling.group_size),
        questions=config.sampling.questions,
        group_size=config.sampling.group_size,
        prompt_len=context.prompt_len,
        seed=config.seed,
    )
    k_config = self._sampling_config(config.rm.rollouts)
    params, graphdef = self.policy_params, policy.graphdef
    self.continue_fn = lambda tokens, mask, key: sampling.sample(
        graphdef, params, tokens, mask, key, k_config
    )
    self.scores = runs.scalar_scores(self.graphdef)
    self.label_metrics = {}  # of the last draw, for its batch_stats
    self._eval_cache = None

  def _sampling_config(self, num_samples: int) -> sampling.SamplingConfig:
    # Temperature only: no top-k / top-p.
    return build.sampling_config(
        self.config, self.task.tokenizer, num_samples, truncate=False
    )

  def _sampler(self, num_samples: int) -> sampling.Sampler:
    return sampling.make_sampler(
        self.context.policy.graphdef,
        self.task.tokenizer,
        self.context.prompt_len,
        self._sampling_config(num_samples),
        self.context.mesh.mesh,
    )

  # --- what the trainer asks ----------------------------------------------

  def init_state(self) -> dict:
    return {"params": jax.tree.map(jnp.copy, self.init_params)}

  def loss_fn(self):
    return label_loss(self.graphdef)

  def draw(self, state: dict, step: int):
    """The frozen policy's samples of step `step`, labelled (the draws
    continue after those of the runs this one continues)."""
    del state  # The policy is frozen.
    self.label_metrics = {}

    def score(batch):
      self.label_metrics.update(self._label(batch, step))
      return batch

    return self.source.draw(self.policy_params, self.data_offset + step, score)

  def prepare(self, state: dict, batch, step: int):
    """The batch's labelled rows (kept for later replay) plus replayed
    rows, as a host rollout whose `step_rewards` are the targets and
    `step_mask` the labelled positions."""
    del state
    targets, label_mask = self._targets(batch.rollout)
    r = batch.rollout
    rows = {
        "tokens": np.asarray(r.tokens, np.int32),
        "attention_mask": np.asarray(r.attention_mask, np.int32),
        "targets": np.asarray(targets, np.float32),
        "label_mask": np.asarray(label_mask, np.float32),
    }
    self._record(step, rows)
    rows = self._with_replay(step, rows)
    return rollout_lib.Rollout(
        tokens=rows["tokens"],
        attention_mask=rows["attention_mask"],
        completion_mask=(rows["label_mask"] > 0).astype(np.int32),
        step_rewards=rows["targets"],
        step_mask=rows["label_mask"],
    )

  def after_update(self, state: dict, minibatch) -> tuple[dict, dict]:
    del minibatch
    return state, {}

  def after_step(self, state: dict, step: int) -> dict:
    del step
    return state

  def batch_stats(self, batch) -> dict:
    del batch
    return dict(self.label_metrics)

  def use_reward_models(self, dirs: dict):
    """A reward model learns from rule labels: it scores with none."""
    raise errors.UserError(
        f"a reward-model run scores with no reward model, got {dirs}"
    )

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
      truth = labels_lib.true_step_labels(self.task, batch)
      targets, mask = truth["step_rewards"], truth["step_mask"]
    else:
      mask = rewards_lib.step_end_mask(ctx, batch)
      key = jax.random.fold_in(
          jax.random.key(self.config.seed + _SHEPHERD_SALT), step
      )
      soft = labels_lib.shepherd_fractions(
          self.task,
          batch,
          mask,
          self.continue_fn,
          self.config.rm.rollouts,
          self.config.rm.prefix_batch,
          key,
      )
      targets = soft if label == "soft" else (soft > 0).astype(np.float32)
    batch.rollout = batch.rollout.replace(step_rewards=targets, step_mask=mask)
    metrics = self._label_stats(targets, mask)
    if label != "ground_truth":
      metrics.update(self._label_quality(batch, targets, mask))
    return metrics

  def _targets(self, rollout):
    """(targets [B, T], label_mask [B, T]) of a labelled rollout."""
    if self.kind == "orm":
      mask = labels_lib.last_token_mask(
          np.asarray(rollout.attention_mask),
          np.asarray(rollout.completion_mask),
      )
      return mask * np.asarray(rollout.rewards)[:, None], mask
    return (
        np.asarray(rollout.step_rewards, np.float32),
        np.asarray(rollout.step_mask, np.float32),
    )

  @staticmethod
  def _label_stats(targets, mask) -> dict:
    on = mask > 0
    return {
        "label_mean": float(targets[on].mean()) if on.any() else 0.0,
        "steps_per_sample": float(on.sum() / len(mask)),
    }

  def _label_quality(self, batch, targets, mask) -> dict:
    """Agreement of automatic step labels with the ground truth, where the
    task has it."""
    try:
      truth = labels_lib.true_step_labels(self.task, batch)["step_rewards"]
    except NotImplementedError:
      return {}
    on = mask > 0
    if not on.any():
      return {}
    return {
        "label_truth_agreement": float(
            np.mean((targets[on] > 0.5) == (truth[on] > 0.5))
        )
    }

  # --- the rows a step trains on: kept, then replayed ----------------------

  def _record(self, step: int, rows: dict):
    """Keeps the step's fresh labelled rows for later replay."""
    reward_data.record(self.context.workdir, step, rows)

  def _with_replay(self, step: int, rows: dict) -> dict:
    """`rows` plus historical rows drawn by (seed, step), so that they make
    up `rm.replay` of the batch."""
    if self.history is None:
      return rows
    return reward_data.with_replay(self.config, self.history, step, rows)

  # --- evaluation and the result -------------------------------------------

  def _eval_batch(self):
    """G fresh samples of the policy for held-out questions (drawn once:
    the policy is frozen)."""
    if self._eval_cache is None:
      test = self.task.examples("test")
      n = min(self.config.rm.eval_questions, len(test))
      examples = [test[i] for i in range(n)]
      g = self.config.sampling.group_size
      key = jax.random.fold_in(jax.random.key(self.config.seed), _EVAL_STEP)
      out = self.source.sampler(
          self.policy_params, [self.task.prompt(ex) for ex in examples], key
      )
      rollout = rollout_lib.Rollout(
          tokens=out.tokens,
          attention_mask=out.attention_mask,
          completion_mask=out.completion_mask,
          group_ids=np.arange(n * g, dtype=np.int32) // g,
      )
      self._eval_cache = sources_lib.Batch(
          rollout, [ex for ex in examples for _ in range(g)], out.texts, {}
      )
    return self._eval_cache

  def evaluate(self, params, num_questions=None) -> dict:
    """ORM: accuracy / AUC of the last-token score against the rule reward.

    PRM: step accuracy / AUC against the ground-truth step labels, and the
    solution score (min over steps) against the rule reward.
    """
    del num_questions  # rm.eval_questions
    batch = self._eval_batch()
    r = batch.rollout
    scores = np.asarray(self.scores(params, r.tokens, r.attention_mask))
    rewards = rewards_lib.rule(rewards_lib.RewardContext(self.task), batch)[
        "rewards"
    ]
    groups = np.asarray(r.group_ids)
    if self.kind == "orm":
      last = labels_lib.last_token_mask(
          np.asarray(r.attention_mask), np.asarray(r.completion_mask)
      )
      rows, cols = np.nonzero(last)
      return labels_lib.binary_metrics(
          "orm", scores[rows, cols], rewards[rows], groups[rows]
      )
    return self._prm_metrics(batch, scores, rewards, groups)

  def _prm_metrics(self, batch, scores, rewards, groups) -> dict:
    mask = rewards_lib.step_end_mask(
        rewards_lib.RewardContext(self.task), batch
    )
    rows, cols = np.nonzero(mask)
    out = {}
    try:
      truth = labels_lib.true_step_labels(self.task, batch)["step_rewards"]
      out.update(
          labels_lib.binary_metrics(
              "step", scores[rows, cols], truth[rows, cols], groups[rows]
          )
      )
    except NotImplementedError:
      pass
    has = mask.sum(1) > 0
    solution = np.where(mask > 0, scores, np.inf).min(1)
    out.update(
        labels_lib.binary_metrics(
            "solution", solution[has], rewards[has], groups[has]
        )
    )
    return out

  def periodic_evaluation(self, state: dict) -> dict:
    return self.evaluate(state["params"])

  def save(self, workdir: str, state: dict):
    runs.save_model(
        workdir,
        state["params"],
        self.context.policy.model_config,
        kind="scalar",
        tokenizer=self.context.policy.tokenizer,
    )
