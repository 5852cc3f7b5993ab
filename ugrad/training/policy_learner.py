"""What a policy run learns from: source -> reward -> coefficient.

The trainer's learner for `config.trainer = "policy"`: it prepares each
step's rollout (the source draws, the reward scores, then the reference's
log-probs, the old log-probs and a critic's values are added where the
coefficient needs them), gives the unified loss of the coefficient, fits the
critic a coefficient declares, and evaluates by greedy accuracy.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ugrad.training import build
from ugrad import coefficients
from ugrad.runtime import distributed
from ugrad.sampling import evaluation as eval_lib
from ugrad import rewards as rewards_lib
from ugrad.training import runs
from ugrad import sampling
from ugrad.training import update as update_lib


class PolicyLearner:
  """The policy's side of a run; see the module docstring."""

  chunk: int  # rows that stay together in a minibatch (a group, a pair)

  def __init__(self, trainer):
    self.trainer = trainer
    config = self.config = trainer.config
    self.policy = trainer.policy
    self.task = trainer.task
    hp = build.coef_hparams(config)
    self.coefficient = build.coefficient(config)
    self.coef_fn = coefficients.make_coefficient(config.coef.name, **hp)
    self.needed = build.needed_fields(config)
    self.chunk = build.group_size(config)
    sampler = sampling.make_sampler(
        self.policy.graphdef, self.policy.tokenizer, trainer.prompt_len,
        sampling.SamplingConfig(
            max_new_tokens=trainer.max_new,
            eos_id=self.policy.tokenizer.eos_id,
            pad_id=self.policy.tokenizer.pad_id,
            num_samples=config.sampling.group_size,
            temperature=config.sampling.temperature,
            top_k=config.sampling.top_k or None,
            top_p=(config.sampling.top_p if config.sampling.top_p < 1
                   else None)),
        trainer.mesh.mesh)
    self.source = build.source_class(config)(
        self.task, sampler=sampler, batch_size=config.batch_size,
        prompt_len=trainer.prompt_len, completion_len=trainer.max_new,
        seed=config.seed, workdir=trainer.workdir, **dict(config.sampling))
    self.set_reward_models(config.reward_model, config.process_reward_model)
    self.logprobs = functools.partial(update_lib.policy_logprobs,
                                      self.policy.graphdef)
    self.critic = None
    if self.coefficient.value_targets is not None:
      self._init_critic(hp)

  def _init_critic(self, hp: dict):
    """A critic from the policy's backbone, fitted on the targets the
    coefficient declares."""
    config, mesh = self.config, self.trainer.mesh
    graphdef, params = build.scalar_from_policy(
        self.policy.model_config, self.trainer.init_params, config.seed, mesh)
    optimizer = build.make_optimizer(
        ml_collections.ConfigDict(dict(config.optim, lr=config.critic.lr)))
    params = jax.tree.map(jnp.copy, params)
    opt_state = update_lib.on_mesh(jax.jit(optimizer.init)(params),
                                   mesh.replicated)
    self.critic = {"params": params, "opt_state": opt_state}
    targets = functools.partial(self.coefficient.value_targets, **hp)
    shardings = jax.tree.map(lambda x: x.sharding, (params, opt_state))
    self.critic_update = update_lib.make_update(
        update_lib.value_loss(graphdef, targets, config.critic.value_clip),
        optimizer, 1, shardings + (mesh.replicated,))
    self.values = jax.jit(lambda p, b: update_lib.value_predictions(
        nnx.merge(graphdef, p), b))

  def set_reward_models(self, outcome_dir: str, process_dir: str):
    """Scores with the learned reward models saved in these workdirs (""
    for none); iterative RL swaps them between iterations."""
    context = rewards_lib.RewardContext(
        self.task,
        outcome_model=(runs.reward_model_scorer(outcome_dir)
                       if outcome_dir else None),
        process_model=(runs.reward_model_scorer(process_dir)
                       if process_dir else None))
    self.scorer = rewards_lib.make_scorer(self.config.reward, context)

  # --- what the trainer asks ----------------------------------------------

  def initial_params(self):
    # The update donates its parameters: train on a copy, so the initial
    # parameters stay valid as the reference and the frozen sampler.
    return jax.tree.map(jnp.copy, self.trainer.init_params)

  def extra_state(self) -> dict:
    """Checkpointed beside params and opt_state: the critic, and the
    reference when it resets during the run."""
    extra = {}
    if self.critic is not None:
      extra["critic"] = self.critic
    if build.ref_reset_period(self.config):
      extra["ref_params"] = jax.tree.map(jnp.copy, self.trainer.init_params)
    return extra

  def loss_fn(self):
    return update_lib.policy_loss(self.policy.graphdef, self.coef_fn,
                                  self.config.normalizer,
                                  self.trainer.max_new)

  def _reference_params(self):
    state = self.trainer.state
    return state.get("ref_params", self.trainer.init_params)

  def prepare(self, step: int):
    """Draws and scores the step's batch; adds logp_ref, values, logp_old.

    Returns:
      (the source's Batch, the completed Rollout as host arrays).
    """
    config, state = self.config, self.trainer.state
    frozen = self.source.frozen
    params = self.trainer.init_params if frozen else state["params"]
    batch = self.source.draw(params, step, self.scorer)
    self.trainer.timer.lap("sample")
    rollout = self.trainer.device_batch(batch.rollout)
    extra = {}
    if "logp_ref" in self.needed:
      extra["logp_ref"] = self.logprobs(self._reference_params(),
                                        rollout.tokens,
                                        rollout.attention_mask)
    # Recomputed when asked, when the source gives none, or when the samples
    # are the frozen policy's: the ratio is then against the current policy
    # at the start of the step, as in offline PPO-style updates.
    if (config.recompute_logp_old or frozen or
        ("logp_old" in self.needed and rollout.logp_old is None)):
      extra["logp_old"] = self.logprobs(state["params"], rollout.tokens,
                                        rollout.attention_mask)
    if "values" in self.needed:
      extra["values"] = self.values(state["critic"]["params"], rollout)
    # One copy on the host: minibatches are sliced from it, and the
    # coefficient's value checks need concrete arrays.
    rollout = distributed.host_get(rollout.replace(**extra))
    coefficients.validate_rollout(config.coef.name, rollout,
                                  build.coef_hparams(config))
    return batch, rollout

  def after_update(self, minibatch) -> dict:
    """Fits the critic on the minibatch the policy just used."""
    if self.critic is None:
      return {}
    critic = self.trainer.state["critic"]
    params, opt_state, metrics = self.critic_update(
        critic["params"], critic["opt_state"],
        self.trainer.device_batch(minibatch))
    self.trainer.state["critic"] = {"params": params, "opt_state": opt_state}
    return {"value_loss": float(metrics["loss"])}

  def after_step(self, step: int):
    """Resets the reference to the policy at the end of a period."""
    period = build.ref_reset_period(self.config)
    if period and (step + 1) % period == 0:
      state = self.trainer.state
      state["ref_params"] = jax.tree.map(jnp.copy, state["params"])

  def batch_stats(self, batch) -> dict:
    r = batch.rollout
    real = np.asarray(r.completion_mask).sum(1) > 0
    stats = {"response_length": float(np.asarray(
        r.completion_mask).sum(1)[real].mean()) if real.any() else 0.0}
    if r.rewards is not None:
      rewards = np.asarray(r.rewards)[real]
      stats["reward_mean"] = float(rewards.mean()) if real.any() else 0.0
      stats["reward_std"] = float(rewards.std()) if real.any() else 0.0
    if self.source.samples:
      correct = [self.task.reward(ex, t) for ex, t, keep in zip(
          batch.examples, batch.texts, real) if keep]
      stats["accuracy"] = float(np.mean(correct)) if correct else 0.0
    return stats

  # --- evaluation and the result -------------------------------------------

  def evaluate(self, params, num_questions=None) -> dict:
    """Greedy accuracy on the held-out split (`config.eval_split`), with a
    bootstrap interval."""
    return eval_lib.greedy_accuracy(
        self.task, self.policy.graphdef, params,
        num_questions or self.config.eval_questions, self.trainer.prompt_len,
        self.trainer.max_new, split=self.config.eval_split,
        mesh=self.trainer.mesh.mesh)

  def periodic_evaluation(self) -> dict:
    """Greedy accuracy, and pass@k / maj@k when `eval_sampled.ks` is set,
    as flat metrics with their 95% bootstrap bounds (`_lo`, `_hi`)."""
    params = self.trainer.state["params"]
    results = self.evaluate(params)
    ks = build.sampled_ks(self.config)
    if ks:
      sampled = eval_lib.sample_eval(
          self.task, self.policy.graphdef, params,
          self.config.eval_sampled.questions, max(ks), ks,
          self.trainer.prompt_len, self.trainer.max_new,
          temperature=self.config.eval_sampled.temperature,
          seed=self.config.seed, split=self.config.eval_split,
          mesh=self.trainer.mesh.mesh)
      results.update({k: v for k, v in sampled.items()
                      if k.startswith(("pass@", "maj@"))})
    return flatten_intervals(results)

  def save(self, workdir: str):
    runs.save_model(workdir, self.trainer.state["params"],
                    self.policy.model_config)


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
