"""What a policy run learns from: source -> reward -> coefficient.

The trainer's learner for `config.trainer = "policy"`: it draws each step's
batch (the source samples, the reward scores) and prepares its rollout (the
reference's log-probs, the old log-probs and a critic's values are added
where the coefficient needs them), gives the unified loss of the
coefficient, fits the critic a coefficient declares (in the trainer's state,
beside the policy), and evaluates by greedy accuracy.
"""

import functools

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ugrad.training import adamw
from ugrad.training import build
from ugrad import coefficients
from ugrad import errors
from ugrad.coefficients import process_stats
from ugrad.runtime import distributed
from ugrad.sampling import evaluation as eval_lib
from ugrad import rewards as rewards_lib
from ugrad.training import learner as learner_lib
from ugrad.models import lora
from ugrad.models import quantize
from ugrad.training import runs
from ugrad.training import trimming
from ugrad.training import update as update_lib


class PolicyLearner:
  """The policy's side of a run (a `learner.Learner`); see the module
  docstring."""

  chunk: int  # rows that stay together in a minibatch (a group, a pair)

  def __init__(self, context: learner_lib.RunContext):
    self.context = context
    config = self.config = context.config
    self.policy = context.policy
    # The trained parameters' initial values: the policy's, or under LoRA
    # its adapters, the base frozen (`frozen`) and shared with the
    # reference, the frozen sampler and a critic's backbone.
    self.frozen, self.initial = None, context.init_params
    if self.policy.lora is not None:
      self.frozen, self.initial = lora.split(context.init_params)
    self.task = context.task
    hp = build.coef_hparams(config)
    self.coefficient = build.coefficient(config)
    self.coef_fn = coefficients.make_coefficient(config.coef.name, **hp)
    self.needed = build.needed_fields(config)
    self.chunk = build.group_size(config)
    sampler = build.make_sampler(
        config, self.policy, context.prompt_len, context.mesh, self.task
    )
    self.episodes = build.episode_spec(config, self.task)
    self.source = build.source_class(config)(
        self.task,
        sampler=sampler,
        batch_size=config.batch_size,
        prompt_len=context.prompt_len,
        completion_len=context.max_new,
        seed=config.seed,
        workdir=context.workdir,
        **dict(config.sampling),
    )
    self.use_reward_models(
        {field: config[field] for field in learner_lib.REWARD_MODEL_FIELDS}
    )
    deviation = build.normalizer_deviation(config)
    if deviation:
      logging.warning("%s", deviation)
    self.temperature = build.train_temperature(config)
    self.logprobs = functools.partial(
        update_lib.policy_logprobs,
        self.policy.graphdef,
        temperature=self.temperature,
    )
    self.initial_critic = None
    if self.coefficient.value_targets is not None:
      self._init_critic(hp)
    self.teacher = None
    if "logp_teacher" in self.needed:
      self._load_teacher()

  def _load_teacher(self):
    """The frozen teacher of `config.teacher` (graphdef, params), after
    checking that it reads the student's tokens as the student does."""
    graphdef, params, tokenizer = runs.load_policy(
        self.config.teacher, self.context.mesh.params
    )
    probe = self.task.prompt(self.task.examples("train")[0])
    teacher_tokens = (tokenizer or self.task.tokenizer).encode(probe)
    vocab = nnx.merge(graphdef, params).config.vocab_size
    if (
        teacher_tokens != self.policy.tokenizer.encode(probe)
        or vocab != self.policy.model_config.vocab_size
    ):
      raise errors.UserError(
          f"teacher {self.config.teacher} does not share the student's "
          "tokenizer (its ids or vocabulary size differ): distillation on "
          "sampled tokens needs the same tokens"
      )
    self.teacher = (graphdef, params)

  def _init_critic(self, hp: dict):
    """A critic from the policy's backbone, fitted on the targets the
    coefficient declares: its update, its values and `initial_critic`."""
    config, mesh = self.config, self.context.mesh
    graphdef, params = build.scalar_from_policy(
        self.policy.model_config,
        self.context.init_params
        if self.frozen is None
        else quantize.dequantized(self.frozen),
        config.seed,
        mesh,
    )
    optimizer = adamw.make_optimizer(
        config,
        ml_collections.ConfigDict(dict(config.optim, lr=config.critic.lr)),
    )
    params = jax.tree.map(jnp.copy, params)
    opt_state = update_lib.init_optimizer(optimizer, params, mesh.replicated)
    self.initial_critic = {"params": params, "opt_state": opt_state}
    targets = functools.partial(self.coefficient.value_targets, **hp)
    shardings = jax.tree.map(lambda x: x.sharding, (params, opt_state))
    self.critic_update = update_lib.make_update(
        update_lib.value_loss(graphdef, targets, config.critic.value_clip),
        optimizer,
        1,
        shardings + (mesh.replicated,),
    )
    self.values = jax.jit(
        lambda p, b: update_lib.value_predictions(nnx.merge(graphdef, p), b)
    )

  def use_reward_models(self, dirs: dict):
    """Scores with the learned reward models saved in these workdirs
    ({field of `learner.REWARD_MODEL_FIELDS`: workdir}, "" or absent for
    none);
    iterative RL swaps them between iterations."""
    outcome = dirs.get("reward_model", "")
    process = dirs.get("process_reward_model", "")
    context = rewards_lib.RewardContext(
        self.task,
        outcome_model=(runs.reward_model_scorer(outcome) if outcome else None),
        process_model=(runs.reward_model_scorer(process) if process else None),
    )
    self.scorer = rewards_lib.make_scorer(self.config.reward, context)

  def full(self, params):
    """The policy's parameters from the trained ones (under LoRA, the
    adapters over the frozen base; a full state passes through)."""
    if self.frozen is None:
      return params
    return lora.combine(self.frozen, params)

  # --- what the trainer asks ----------------------------------------------

  def init_state(self) -> dict:
    """The params, a copy (the update donates its parameters: the initial
    ones stay valid as the reference and the frozen sampler); the critic,
    and the reference when it resets during the run."""
    state = {"params": jax.tree.map(jnp.copy, self.initial)}
    if self.initial_critic is not None:
      state["critic"] = self.initial_critic
    if build.ref_reset_period(self.config):
      state["ref_params"] = jax.tree.map(jnp.copy, self.initial)
    return state

  def loss_fn(self):
    return update_lib.policy_loss(
        self.policy.graphdef,
        self.coef_fn,
        build.normalizer(self.config),
        self.context.max_new,
        self.temperature,
        build.sampler_correction(self.config),
    )

  def draw(self, state: dict, step: int):
    """The source's batch of step `step`, scored."""
    params = self.context.init_params if self.source.frozen else state["params"]
    return self.source.draw(self.full(params), step, self.scorer)

  def prepare(self, state: dict, batch, step: int):
    """The batch's rollout with logp_ref, values and logp_old added where
    the coefficient needs them, as host arrays, trimmed
    (`ugrad.training.trimming`): the passes run on the trimmed width; with
    LoRA dropout, each row's dropout seed of the step."""
    config = self.config
    rollout = self.context.device_batch(
        trimming.trim(batch.rollout, trimming.bucket_of(config))
    )
    extra = {}
    if "logp_ref" in self.needed:
      reference = state.get("ref_params", self.context.init_params)
      extra["logp_ref"] = self.logprobs(
          self.full(reference), rollout.tokens, rollout.attention_mask
      )
    # Recomputed when asked, when the source gives none, or when the samples
    # are the frozen policy's: the ratio is then against the current policy
    # at the start of the step, as in offline PPO-style updates. A sampler
    # correction keeps the sampler's log-probs beside the recomputed ones.
    correcting = build.sampler_correction(config)[0] != "none"
    if correcting and rollout.logp_old is not None:
      extra["logp_sampler"] = rollout.logp_old
    if (
        correcting
        or config.recompute_logp_old
        or self.source.frozen
        or ("logp_old" in self.needed and rollout.logp_old is None)
    ):
      extra["logp_old"] = self.logprobs(
          self.full(state["params"]), rollout.tokens, rollout.attention_mask
      )
    if self.teacher is not None:
      extra["logp_teacher"] = update_lib.policy_logprobs(
          *self.teacher,
          rollout.tokens,
          rollout.attention_mask,
          temperature=self.temperature,
      )
    if "values" in self.needed:
      extra["values"] = self.values(state["critic"]["params"], rollout)
    if self.policy.lora is not None and self.policy.lora.dropout > 0:
      extra["dropout_seeds"] = np.random.default_rng(
          [config.seed, step, 13]
      ).integers(0, 2**31 - 1, rollout.tokens.shape[0], dtype=np.int32)
    # One copy on the host: minibatches are sliced from it, and the
    # coefficient's value checks need concrete arrays.
    rollout = distributed.host_get(rollout.replace(**extra))
    coefficients.validate_rollout(
        config.coef.name, rollout, build.coef_hparams(config)
    )
    return rollout

  def after_update(self, state: dict, minibatch) -> tuple[dict, dict]:
    """Fits the critic on the minibatch the policy just used."""
    if self.initial_critic is None:
      return state, {}
    critic = state["critic"]
    params, opt_state, metrics = self.critic_update(
        critic["params"],
        critic["opt_state"],
        self.context.device_batch(minibatch),
    )
    state = dict(state, critic={"params": params, "opt_state": opt_state})
    return state, {"value_loss": float(metrics["loss"])}

  def after_step(self, state: dict, step: int) -> dict:
    """Resets the reference to the policy at the end of a period."""
    period = build.ref_reset_period(self.config)
    if period and (step + 1) % period == 0:
      state = dict(state, ref_params=jax.tree.map(jnp.copy, state["params"]))
    return state

  def batch_stats(self, batch) -> dict:
    r = batch.rollout
    real = np.asarray(r.completion_mask).sum(1) > 0
    stats = {
        "response_length": float(
            np.asarray(r.completion_mask).sum(1)[real].mean()
        )
        if real.any()
        else 0.0
    }
    if r.rewards is not None:
      rewards = np.asarray(r.rewards)[real]
      stats["reward_mean"] = float(rewards.mean()) if real.any() else 0.0
      stats["reward_std"] = float(rewards.std()) if real.any() else 0.0
    if self.source.samples:
      correct = [
          self.task.reward(ex, t)
          for ex, t, keep in zip(batch.examples, batch.texts, real)
          if keep
      ]
      stats["accuracy"] = float(np.mean(correct)) if correct else 0.0
    if self.config.coef.name == "grpo_process":
      stats.update(
          process_stats.process_advantage_stats(
              r, self.config.coef.std_normalize, self.config.coef.eps
          )
      )
    return stats

  # --- evaluation and the result -------------------------------------------

  def evaluate(self, params, num_questions=None) -> dict:
    """Greedy accuracy on the held-out split (`config.eval_split`), with a
    bootstrap interval."""
    return eval_lib.greedy_accuracy(
        self.task,
        self.policy.graphdef,
        self.full(params),
        num_questions or self.config.eval_questions,
        self.context.prompt_len,
        self.context.max_new,
        split=self.config.eval_split,
        mesh=self.context.mesh.mesh,
        episodes=self.episodes,
    )

  def periodic_evaluation(self, state: dict) -> dict:
    """Greedy accuracy, and pass@k / maj@k when `eval_sampled.ks` is set,
    as flat metrics with their 95% bootstrap bounds (`_lo`, `_hi`)."""
    params = state["params"]
    results = self.evaluate(params)
    ks = build.sampled_ks(self.config)
    if ks:
      sampled = eval_lib.sample_eval(
          self.task,
          self.policy.graphdef,
          self.full(params),
          self.config.eval_sampled.questions,
          max(ks),
          ks,
          self.context.prompt_len,
          self.context.max_new,
          temperature=self.config.eval_sampled.temperature,
          seed=self.config.seed,
          split=self.config.eval_split,
          mesh=self.context.mesh.mesh,
          episodes=self.episodes,
      )
      results.update(
          {k: v for k, v in sampled.items() if k.startswith(("pass@", "maj@"))}
      )
    return flatten_intervals(results)

  def save(self, workdir: str, state: dict):
    """The final policy, adapters folded into the kernels under LoRA: a
    plain model that `init_from` and the evaluation CLI load (and the
    adapters alone, for a PEFT export)."""
    params = self.full(state["params"])
    if self.policy.lora is not None:
      runs.save_adapters(workdir, state["params"])
      params = lora.merged(params, self.policy.lora)
    runs.save_model(
        workdir,
        params,
        self.policy.model_config,
        tokenizer=self.policy.tokenizer,
    )


def flatten_intervals(results: dict) -> dict:
  """Numeric results as metrics, each "name_ci" [lo, hi] as name_lo and
  name_hi."""
  metrics = {}
  for name, value in results.items():
    if name.endswith("_ci"):
      lo, hi = value
      metrics[name[:-3] + "_lo"], metrics[name[:-3] + "_hi"] = lo, hi
    elif isinstance(value, (int, float)):
      metrics[name] = value
  return metrics
