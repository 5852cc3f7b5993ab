"""The training loop: data source -> reward -> coefficient -> unified loss.

One step: the source draws a batch (sampling with the current or a frozen
policy where it samples), the reward function scores it, the trainer adds
`logp_ref` (frozen reference) and `values` (PPO critic), then for
`ppo_epochs` x `minibatches` a jitted `update` computes `logp`, the
coefficient and `unified_loss`, and applies the optax update. Everything a
method changes is in the config: which source, which reward, which
coefficient.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Optional

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from ugrad import checkpoint as checkpoint_lib
from ugrad import coefficients
from ugrad import eval as eval_lib
from ugrad import gradlog
from ugrad import masked
from ugrad import metrics as metrics_lib
from ugrad import models
from ugrad import rewards as rewards_lib
from ugrad import sampling
from ugrad import sources as sources_lib
from ugrad import stats as stats_lib
from ugrad import tasks as tasks_lib
from ugrad.coefficients import advantages
from ugrad.coefficients import ppo as ppo_lib
from ugrad.loss import NORMALIZERS
from ugrad.loss import unified_loss
from ugrad.models import sharding as sharding_lib

# Metrics that measure wall time; they differ between identical runs.
TIMING_KEYS = ("tokens_per_s", "step_time_s")
POLICY_DIR = "policy"  # the final parameters of a run, for init_from
CONFIG_FILE = "run_config.json"
MODEL_FILE = "model.json"
SAMPLING_SOURCES = ("online", "frozen_policy")


# ---------------------------------------------------------------------------
# Validation: everything that can be checked before anything heavy runs.
# ---------------------------------------------------------------------------


def coef_hparams(config) -> dict:
  return {k: v for k, v in config.coef.items() if k != "name"}


def needs_sft_warm_start(config) -> bool:
  """Whether an RL run on the embedded task must first train its SFT policy."""
  return (not config.init_from and config.coef.name != "sft"
          and config.task == "arithmetic")


def validate(config) -> None:
  """Refuses a config that cannot work, saying why.

  Raises:
    ValueError: for unknown names (listing the valid ones) and for
      combinations of source, reward and coefficient that cannot work.
  """
  _check_names(config)
  _check_fields(config)
  _check_batch_split(config)
  _check_models(config)
  _check_iterative(config)
  sampled_ks(config)


def _check_names(config) -> None:
  """Every family name exists (the error lists the valid ones)."""
  if config.task not in tasks_lib.TASKS:
    raise ValueError(f"unknown task {config.task!r}; valid tasks: "
                     f"{', '.join(sorted(tasks_lib.TASKS))}")
  if config.model not in models.PRESETS:
    raise ValueError(f"unknown model preset {config.model!r}; valid: "
                     f"{', '.join(sorted(models.PRESETS))}")
  sources_lib.check_name(config.source)
  rewards_lib.parse_spec(config.reward)
  coefficients.bind_hparams(config.coef.name, coef_hparams(config))
  if config.normalizer not in NORMALIZERS:
    raise ValueError(f"unknown normalizer {config.normalizer!r}; valid: "
                     f"{', '.join(NORMALIZERS)}")


_FIELD_HINTS = {
    "pair_ids": "DPO pairs come from a sampling source (online / "
                "frozen_policy) with sampling.pairs=True",
    "pair_sign": "see pair_ids",
    "group_ids": "groups come from a sampling source (online / "
                 "frozen_policy)",
    "rewards": "an outcome reward (rule / model) provides rewards",
    "step_rewards": "a process reward (process / ground_truth_process) "
                    "provides step rewards",
    "step_mask": "see step_rewards",
}


def _check_fields(config) -> None:
  """The source and reward provide every Rollout field the coefficient
  needs."""
  name = config.coef.name
  needed = coefficients.required_fields(name, coef_hparams(config))
  provided = rewards_lib.provided_fields(config.reward)
  sampling_source = config.source in SAMPLING_SOURCES
  g = config.sampling.group_size if sampling_source else 1
  provided |= {"logp_ref", "values"} if name == "ppo" else {"logp_ref"}
  if sampling_source:
    provided |= {"logp_old", "group_ids"}
    if config.sampling.pairs:
      provided |= {"pair_ids", "pair_sign"}
  elif "logp_old" in needed:
    provided.add("logp_old")  # recomputed from the current policy
  missing = sorted(needed - provided)
  if missing:
    why = "; ".join(f"{f}: {_FIELD_HINTS.get(f, 'not provided')}"
                    for f in missing)
    raise ValueError(
        f"coefficient {name!r} needs {', '.join(missing)}, which source "
        f"{config.source!r} with reward {config.reward!r} does not provide "
        f"({why})")
  if "group_ids" in needed and not config.sampling.pairs and g < 2:
    raise ValueError(f"coefficient {name!r} compares samples within a group: "
                     f"sampling.group_size must be >= 2, got {g}")
  if sampling_source and not rewards_lib.provided_fields(config.reward):
    raise ValueError(f"source {config.source!r} samples completions that "
                     f"need a reward, and reward {config.reward!r} gives none")
  if config.sampling.pairs and g < 2:
    raise ValueError("sampling.pairs builds a pair from each group: "
                     f"sampling.group_size must be >= 2, got {g}")
  if config.sampling.pairs and not sampling_source:
    raise ValueError("sampling.pairs needs a sampling source (online / "
                     f"frozen_policy), not {config.source!r}")


def _check_batch_split(config) -> None:
  """Minibatches and micro-batches hold whole groups and fill the devices."""
  rows = _rows_per_step(config)
  sampling_source = config.source in SAMPLING_SOURCES
  chunk = 2 if config.sampling.pairs else (
      config.sampling.group_size if sampling_source else 1)
  parts = config.minibatches * config.micro_batches
  if rows % parts or (rows // parts) % chunk:
    raise ValueError(
        f"{rows} rows per step cannot be split into {config.minibatches} "
        f"minibatches x {config.micro_batches} micro-batches of whole groups "
        f"of {chunk}")
  if (rows // parts) % jax.device_count():
    raise ValueError(f"micro-batches of {rows // parts} rows do not divide "
                     f"over {jax.device_count()} devices")


def _check_models(config) -> None:
  """Learned rewards name their model; RL off the embedded task has an SFT
  policy to start from."""
  terms = dict(rewards_lib.parse_spec(config.reward))
  if "model" in terms and not config.reward_model:
    raise ValueError("the 'model' reward needs config.reward_model: the "
                     "workdir of a trained outcome reward model")
  if "process" in terms and not config.process_reward_model:
    raise ValueError("the 'process' reward needs config.process_reward_model:"
                     " the workdir of a trained process reward model")
  if config.task != "arithmetic" and not config.init_from and (
      config.coef.name != "sft"):
    raise ValueError(f"RL on task {config.task!r} needs an SFT policy: set "
                     "config.init_from to a ugrad workdir or a Hugging Face "
                     "directory")


def _check_iterative(config) -> None:
  """Iterative RL splits the steps evenly and owns the reference resets."""
  it = config.iterative
  if it.iterations < 1:
    raise ValueError(f"iterative.iterations must be >= 1, got "
                     f"{it.iterations}")
  if it.iterations == 1:
    return
  if config.steps % it.iterations:
    raise ValueError(f"{config.steps} steps cannot be split into "
                     f"{it.iterations} equal iterations")
  if config.ref_reset_every:
    raise ValueError("iterative RL resets the reference after each "
                     "iteration: set ref_reset_every=0")
  if it.rm_steps < 1 or not 0.0 <= it.replay < 1.0:
    raise ValueError("iterative.rm_steps must be >= 1 and iterative.replay "
                     f"in [0, 1), got {it.rm_steps} and {it.replay}")


def ref_reset_period(config) -> int:
  """Steps between reference resets (0: never): `ref_reset_every`, or one
  iteration of iterative RL."""
  if config.iterative.iterations > 1:
    return config.steps // config.iterative.iterations
  return config.ref_reset_every


def sampled_ks(config) -> list[int]:
  """The k of the periodic pass@k / maj@k (`eval_sampled.ks`, e.g.
  "1,4,16"), sorted; [] for none.

  Raises:
    ValueError: for an entry that is not a positive integer.
  """
  return stats_lib.parse_ks(config.eval_sampled.ks.split(","),
                            "eval_sampled.ks")


def _rows_per_step(config) -> int:
  if config.source not in SAMPLING_SOURCES:
    return config.batch_size
  if config.sampling.pairs:
    return 2 * config.sampling.questions
  return config.sampling.questions * config.sampling.group_size


# ---------------------------------------------------------------------------
# Building blocks.
# ---------------------------------------------------------------------------


def make_task(config):
  """The embedded task (`task_kwargs`) or a JSONL task (`data` paths)."""
  if config.task == "arithmetic":
    kwargs = dict(config.task_kwargs)
    kwargs["digits"] = tuple(kwargs["digits"])
    kwargs.setdefault("seed", config.seed)
  else:
    kwargs = {"train_path": config.data.train_path or None,
              "test_path": config.data.test_path or None}
  return tasks_lib.make_task(config.task, **kwargs)


def compute_dtype(config) -> str:
  """The model's compute dtype: "auto" is bfloat16 on GPU/TPU, float32 on
  CPU. Parameters (and optimizer state) always stay float32."""
  if config.compute_dtype != "auto":
    return config.compute_dtype
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def make_optimizer(optim) -> optax.GradientTransformation:
  """AdamW with linear warm-up to a constant rate, after global-norm clip."""
  schedule = optax.linear_schedule(0.0, optim.lr, max(optim.warmup_steps, 1))
  if optim.warmup_steps == 0:
    schedule = optim.lr
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2,
                  weight_decay=optim.weight_decay))


def prompt_length(task) -> int:
  """The longest encoded prompt over both splits (the fixed P)."""
  tok = task.tokenizer
  return max(len(tasks_lib.encode_prompt(tok, task.prompt(ex)))
             for split in ("train", "test") for ex in task.examples(split))


_MODEL_CLASSES = {"policy": models.Transformer, "scalar": models.ScalarModel}


def save_model(workdir: str, params, model_config, kind: str = "policy"):
  """Writes parameters and model shape where `init_from` (or a reward-model
  setting) can load them: WORKDIR/policy and WORKDIR/model.json."""
  path = os.path.join(os.path.abspath(workdir), POLICY_DIR)
  if os.path.exists(path):
    return
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
  with open(os.path.join(workdir, MODEL_FILE), "w") as f:
    json.dump({"kind": kind, "config": dataclasses.asdict(model_config)}, f)


def load_model(path: str, kind: str = "policy"):
  """(graphdef, params) of a model saved by `save_model`."""
  model_file = os.path.join(path, MODEL_FILE)
  if not os.path.exists(model_file):
    raise FileNotFoundError(
        f"{path} holds no finished ugrad run ({MODEL_FILE} is missing)")
  with open(model_file) as f:
    saved = json.load(f)
  if saved["kind"] != kind:
    raise ValueError(f"{path} holds a {saved['kind']} model, not a {kind} "
                     "model")
  model_config = models.ModelConfig(**saved["config"])
  abstract = nnx.eval_shape(
      lambda: _MODEL_CLASSES[kind](model_config, rngs=nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(abstract, nnx.Param)
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(
        os.path.join(os.path.abspath(path), POLICY_DIR), abstract_params)
  return graphdef, params


def load_policy(path: str):
  """(graphdef, params, tokenizer or None) from a ugrad run or HF dir.

  Parameters load as float32 (the trainer's master weights)."""
  if not os.path.exists(os.path.join(path, MODEL_FILE)) and os.path.exists(
      os.path.join(path, "config.json")):
    model, tokenizer = models.from_pretrained(path, dtype="float32")
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params, tokenizer
  graphdef, params = load_model(path, "policy")
  return graphdef, params, None


def reward_model_scorer(path: str):
  """A numpy score function (tokens, attention_mask) -> [B, T] of a saved
  scalar (reward) model."""
  graphdef, params = load_model(path, "scalar")
  scores = jax.jit(lambda p, t, m: nnx.merge(graphdef, p)(t, m))
  return lambda tokens, mask: np.asarray(scores(params, tokens, mask))


def scalar_from_policy(model_config, policy_params, seed: int):
  """A scalar model (critic, reward model): the policy's backbone and a
  zero-initialised head."""
  critic = models.ScalarModel(model_config, rngs=nnx.Rngs(seed + 1))
  graphdef, params = nnx.split(critic, nnx.Param)
  pure = nnx.to_pure_dict(params)
  policy = nnx.to_pure_dict(policy_params)
  for key in pure:
    if key in policy:
      pure[key] = policy[key]
  nnx.replace_by_pure_dict(params, pure)
  return graphdef, params


def open_checkpoints(config, workdir: str, state):
  """The run's Checkpointer and the state to start from.

  Returns:
    (checkpointer, start step, state, checkpoint meta): the latest good
    checkpoint's step, state and meta when there is one, else (0, `state`,
    {}).
  """
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.checkpoint_every,
      config.keep_checkpoints)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
  restored = checkpointer.restore(abstract)
  if restored is None:
    return checkpointer, 0, state, {}
  step, state, meta = restored
  logging.info("Resumed %s at step %d", workdir, step)
  return checkpointer, step, state, meta


# ---------------------------------------------------------------------------
# The jitted functions.
# ---------------------------------------------------------------------------


def make_update(graphdef, coef_fn, normalizer: str, max_len: int,
                optimizer, micro_batches: int, shardings):
  """The jitted train step: (params, opt_state, batch) -> new state, metrics.

  Micro-batches accumulate the numerator and denominator of the unified loss
  and the gradient of the numerator, and divide by the global denominator
  once, so accumulation gives exactly the full-batch gradient.
  """

  def numerator(params, batch):
    model = nnx.merge(graphdef, params)
    logp = models.token_logprobs(model, batch.tokens, batch.attention_mask)
    coef, metrics = coef_fn(batch, logp)
    _, aux = unified_loss(logp, coef, batch.completion_mask, normalizer,
                          max_len)
    if batch.logp_old is not None:
      metrics["logp_mismatch"] = masked.masked_mean(
          jnp.abs(logp - batch.logp_old), batch.completion_mask)
    return aux["numerator"], (aux["denominator"], metrics)

  grad_fn = jax.value_and_grad(numerator, has_aux=True)

  def update(params, opt_state, batch):
    if micro_batches == 1:
      (num, (den, metrics)), grads = grad_fn(params, batch)
    else:
      split = jax.tree.map(
          lambda x: x.reshape(micro_batches, -1, *x.shape[1:]), batch)

      def body(carry, micro):
        (num, (den, metrics)), grads = grad_fn(params, micro)
        carry = jax.tree.map(jnp.add, carry, (num, den, grads))
        return carry, metrics

      zeros = (0.0, 0.0, jax.tree.map(jnp.zeros_like, params))
      (num, den, grads), metrics = jax.lax.scan(body, zeros, split)
      metrics = jax.tree.map(jnp.mean, metrics)
    scale = 1.0 / jnp.maximum(den, 1)
    grads = jax.tree.map(lambda g: g * scale, grads)
    metrics = dict(metrics, loss=num * scale,
                   grad_norm=optax.tree.norm(grads))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  param_sh, opt_sh, replicated = shardings
  return jax.jit(update, donate_argnums=(0, 1),
                 out_shardings=(param_sh, opt_sh, replicated))


def make_critic_update(graphdef, optimizer, coef_hp: dict, value_clip: float,
                       shardings):
  """The jitted PPO critic step: clipped value loss on GAE returns."""

  def loss_fn(params, batch):
    mask = batch.completion_mask
    token_rewards = ppo_lib.token_rewards(batch, coef_hp["beta"],
                                          coef_hp["kl_estimator"],
                                          coef_hp["kl_in"])
    _, returns = advantages.gae(token_rewards, batch.values, mask,
                                coef_hp["gamma"], coef_hp["lam"])
    values = value_predictions(nnx.merge(graphdef, params), batch)
    clipped = batch.values + jnp.clip(values - batch.values, -value_clip,
                                      value_clip)
    err = jnp.maximum(jnp.square(values - returns),
                      jnp.square(clipped - returns))
    return 0.5 * masked.masked_mean(err, mask)

  def update(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state,
            {"value_loss": loss})

  param_sh, opt_sh, replicated = shardings
  return jax.jit(update, donate_argnums=(0, 1),
                 out_shardings=(param_sh, opt_sh, replicated))


@functools.partial(jax.jit, static_argnums=0)
def policy_logprobs(graphdef, params, tokens, attention_mask) -> jax.Array:
  """[B, T] token log-probs of a policy (compiled once per graph and shape)."""
  return models.token_logprobs(nnx.merge(graphdef, params), tokens,
                               attention_mask)


def value_predictions(critic, batch) -> jax.Array:
  """[B, T] V(s_t) for the state before token t (the critic scores prefixes
  tokens[:t+1], so the value of the state before token t is at t - 1)."""
  scores = critic(batch.tokens, batch.attention_mask)
  return jnp.pad(scores[:, :-1], ((0, 0), (1, 0)))


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Policy:
  """A policy's graph definition and what it runs under."""

  graphdef: Any
  model_config: Any
  tokenizer: Any


class Trainer:
  """Builds a run from its config and trains it (resuming if possible)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.task = make_task(config)
    self._init_policy()
    self.prompt_len = prompt_length(self.task)
    self.max_new = config.sampling.max_new_tokens
    self._init_mesh()
    self._init_state()
    self._init_families()

  # --- construction -------------------------------------------------------

  def _init_policy(self):
    config = self.config
    tokenizer = self.task.tokenizer
    if needs_sft_warm_start(config):
      config.init_from = warm_start(config, self.workdir)
    if config.init_from:
      graphdef, params, hf_tokenizer = load_policy(config.init_from)
      if hf_tokenizer is not None and config.task == "arithmetic":
        raise ValueError("a Hugging Face policy cannot be trained on the "
                         "embedded task's character vocabulary")
      tokenizer = hf_tokenizer or tokenizer
      model_config = dataclasses.replace(
          nnx.merge(graphdef, params).config, dtype=compute_dtype(config))
      graphdef = nnx.split(nnx.eval_shape(lambda: models.Transformer(
          model_config, rngs=nnx.Rngs(0))), nnx.Param)[0]
    else:
      model_config = models.preset(config.model, tokenizer.vocab_size,
                                   dtype=compute_dtype(config))
      model = models.Transformer(model_config, rngs=nnx.Rngs(config.seed))
      graphdef, params = nnx.split(model, nnx.Param)
    if hasattr(self.task, "tokenizer") and tokenizer is not self.task.tokenizer:
      self.task.tokenizer = tokenizer
    self.policy = Policy(graphdef, model_config, tokenizer)
    self.init_params = params

  def _init_mesh(self):
    mesh = sharding_lib.data_mesh()
    rules = sharding_lib.get_rules("fsdp" if self.config.fsdp
                                   else "data_parallel")
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    self.param_sharding = sharding_lib.param_shardings(self.init_params, mesh,
                                                       rules)

  def _on_mesh(self, tree):
    """Puts leaves that XLA left on one device (e.g. step counts) on the
    mesh, replicated, so every jit input and output lives on one mesh."""
    return jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) else
        jax.device_put(x, self.replicated), tree)

  def _init_state(self):
    config = self.config
    self.init_params = jax.device_put(self.init_params, self.param_sharding)
    # The train step donates its parameters: train on a copy, so the initial
    # parameters stay valid as the reference and the frozen sampler.
    params = jax.tree.map(jnp.copy, self.init_params)
    self.optimizer = make_optimizer(config.optim)
    opt_state = self._on_mesh(jax.jit(self.optimizer.init)(params))
    self.opt_sharding = jax.tree.map(lambda x: x.sharding, opt_state)
    state = {"params": params, "opt_state": opt_state,
             "rng": self._on_mesh(
                 jax.random.key_data(jax.random.key(config.seed)))}
    if config.coef.name == "ppo":
      c_graphdef, c_params = scalar_from_policy(self.policy.model_config,
                                                 self.init_params, config.seed)
      self.critic_graphdef = c_graphdef
      self.critic_optimizer = make_optimizer(
          ml_collections.ConfigDict(dict(config.optim, lr=config.critic.lr)))
      c_params = jax.tree.map(jnp.copy, jax.device_put(
          c_params, sharding_lib.param_shardings(
              c_params, self.mesh, sharding_lib.get_rules(
                  "fsdp" if config.fsdp else "data_parallel"))))
      c_opt = self._on_mesh(jax.jit(self.critic_optimizer.init)(c_params))
      state["critic"] = {"params": c_params, "opt_state": c_opt}
    if ref_reset_period(config):
      state["ref_params"] = jax.tree.map(jnp.copy, params)
    self.ref_params = self.init_params
    (self.checkpointer, self.start_step, self.state,
     self.resume_meta) = open_checkpoints(config, self.workdir, state)

  def _init_families(self):
    config = self.config
    hp = coef_hparams(config)
    self.coef_fn = coefficients.make_coefficient(config.coef.name, **hp)
    self.needed = coefficients.required_fields(config.coef.name, hp)
    sampler_config = sampling.SamplingConfig(
        max_new_tokens=self.max_new, eos_id=self.policy.tokenizer.eos_id,
        pad_id=self.policy.tokenizer.pad_id,
        num_samples=config.sampling.group_size,
        temperature=config.sampling.temperature,
        top_k=config.sampling.top_k or None,
        top_p=config.sampling.top_p if config.sampling.top_p < 1 else None)
    graphdef = self.policy.graphdef

    def sampler(params, tokens, mask, key):
      return sampling.sample(graphdef, params, tokens, mask, key,
                             sampler_config)

    self.source = sources_lib.SOURCES[config.source](
        self.task, sampler=sampler, batch_size=config.batch_size,
        prompt_len=self.prompt_len, completion_len=self.max_new,
        seed=config.seed, workdir=self.workdir,
        **dict(config.sampling))
    self.scorer = self._make_scorer(config.reward_model,
                                    config.process_reward_model)
    self.reward_iteration = 0
    shardings = (self.param_sharding, self.opt_sharding, self.replicated)
    self.update = make_update(graphdef, self.coef_fn, config.normalizer,
                              self.max_new, self.optimizer,
                              config.micro_batches, shardings)
    self.logprobs = functools.partial(policy_logprobs, graphdef)
    if config.coef.name == "ppo":
      critic = self.state["critic"]
      c_sh = (jax.tree.map(lambda x: x.sharding, critic["params"]),
              jax.tree.map(lambda x: x.sharding, critic["opt_state"]),
              self.replicated)
      self.critic_update = make_critic_update(
          self.critic_graphdef, self.critic_optimizer,
          coefficients.bind_hparams("ppo", hp), config.critic.value_clip, c_sh)
      c_graphdef = self.critic_graphdef
      self.values = jax.jit(lambda p, b: value_predictions(
          nnx.merge(c_graphdef, p), b))

  def _make_scorer(self, outcome_dir: str, process_dir: str):
    context = rewards_lib.RewardContext(
        self.task,
        outcome_model=(reward_model_scorer(outcome_dir)
                       if outcome_dir else None),
        process_model=(reward_model_scorer(process_dir)
                       if process_dir else None))
    return rewards_lib.make_scorer(self.config.reward, context)

  # --- one step -----------------------------------------------------------

  def _start_iteration(self, step: int) -> dict:
    """Iterative RL: before the first step of an iteration (or the first
    step after resuming), the reward models of that iteration, continued on
    samples of the current policy; returns their evaluation at the
    iteration's first step."""
    # Imported here: ugrad.iterative trains reward models, whose module
    # imports this one.
    from ugrad import iterative  # pylint: disable=g-import-not-at-top
    k = iterative.iteration_of(self.config, step)
    if k == self.reward_iteration:
      return {}
    first_step = step == k * ref_reset_period(self.config)
    dirs, metrics = iterative.reward_models_of(
        self.config, self.workdir, k, self.state["params"],
        self.policy.model_config, first_step)
    self.scorer = self._make_scorer(dirs.get("reward_model", ""),
                                    dirs.get("process_reward_model", ""))
    self.reward_iteration = k
    return metrics if first_step else {}

  def _reference_params(self):
    if "ref_params" in self.state:
      return self.state["ref_params"]
    return self.ref_params

  def _device_batch(self, rollout):
    return jax.device_put(
        jax.tree.map(np.asarray, rollout), self.batch_sharding)

  def _prepare(self, step: int):
    """Draws and scores the step's batch; adds logp_ref, values, logp_old.

    Returns:
      (the source's Batch, the completed Rollout as host arrays).
    """
    config = self.config
    params = self.state["params"]
    if config.source == "frozen_policy":
      params = self.init_params
    batch = self.source.draw(params, step, self.scorer)
    rollout = self._device_batch(batch.rollout)
    extra = {}
    if "logp_ref" in self.needed:
      extra["logp_ref"] = self.logprobs(self._reference_params(),
                                        rollout.tokens,
                                        rollout.attention_mask)
    # Recomputed when asked, when the source gives none, or when the samples
    # are the frozen policy's: the ratio is then against the current policy
    # at the start of the step, as in offline PPO-style updates.
    if (config.recompute_logp_old or config.source == "frozen_policy" or
        ("logp_old" in self.needed and rollout.logp_old is None)):
      extra["logp_old"] = self.logprobs(self.state["params"], rollout.tokens,
                                        rollout.attention_mask)
    if "values" in self.needed:
      extra["values"] = self.values(self.state["critic"]["params"], rollout)
    # One copy on the host: minibatches are sliced from it, and the
    # coefficient's value checks need concrete arrays.
    rollout = jax.device_get(rollout.replace(**extra))
    coefficients.validate_rollout(config.coef.name, rollout,
                                  coef_hparams(config))
    return batch, rollout

  def _minibatches(self, step: int, epoch: int, rows: int):
    """Row orders of the step's minibatches: whole groups, shuffled."""
    config = self.config
    chunk = 2 if config.sampling.pairs else self.source.group_size
    groups = rows // chunk
    order = np.arange(groups)
    if config.ppo_epochs > 1 or config.minibatches > 1:
      order = np.random.default_rng([config.seed, step, epoch, 7]).permutation(
          groups)
    rows_of = (order[:, None] * chunk + np.arange(chunk)).reshape(-1)
    return np.split(rows_of, config.minibatches)

  def train_step(self, step: int, gradient_log, writer) -> dict:
    config = self.config
    # Before the clock starts: continuing reward models is not the step's.
    reward_model_metrics = self._start_iteration(step)
    start = time.perf_counter()
    batch, rollout = self._prepare(step)
    rows = rollout.tokens.shape[0]
    host_tokens = np.asarray(batch.rollout.tokens)
    step_metrics = []
    update_index = 0
    for epoch in range(config.ppo_epochs):
      for rows_idx in self._minibatches(step, epoch, rows):
        mb = self._device_batch(jax.tree.map(lambda x: x[rows_idx], rollout))
        params, opt_state, metrics = self.update(
            self.state["params"], self.state["opt_state"], mb)
        self.state["params"], self.state["opt_state"] = params, opt_state
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics["loss"]):
          raise FloatingPointError(self._nan_message(step, metrics["loss"]))
        if config.coef.name == "ppo":
          critic = self.state["critic"]
          c_params, c_opt, c_metrics = self.critic_update(
              critic["params"], critic["opt_state"], mb)
          self.state["critic"] = {"params": c_params, "opt_state": c_opt}
          metrics.update({k: float(v) for k, v in c_metrics.items()})
        self._log_update(gradient_log, step, update_index, batch, metrics,
                         host_tokens[rows_idx])
        step_metrics.append(metrics)
        update_index += 1
    metrics = {k: float(np.mean([m[k] for m in step_metrics]))
               for k in step_metrics[0]}
    metrics.update({f"source_{k}": v for k, v in batch.metrics.items()})
    metrics.update(self._batch_stats(batch))
    metrics.update(reward_model_metrics)
    elapsed = time.perf_counter() - start
    tokens = int(np.asarray(batch.rollout.attention_mask).sum())
    metrics["tokens_per_s"] = tokens * config.ppo_epochs / elapsed
    metrics["step_time_s"] = elapsed
    period = ref_reset_period(config)
    if period and (step + 1) % period == 0:
      self.state["ref_params"] = jax.tree.map(jnp.copy, self.state["params"])
    if config.sample_log_every and step % config.sample_log_every == 0:
      for i in range(min(3, len(batch.texts))):
        writer.write_text(step + 1, f"sample_{i}",
                          self.task.prompt(batch.examples[i]) +
                          batch.texts[i])
    return metrics

  def _batch_stats(self, batch) -> dict:
    r = batch.rollout
    real = np.asarray(r.completion_mask).sum(1) > 0
    stats = {"response_length": float(np.asarray(
        r.completion_mask).sum(1)[real].mean()) if real.any() else 0.0}
    if r.rewards is not None:
      rewards = np.asarray(r.rewards)[real]
      stats["reward_mean"] = float(rewards.mean()) if real.any() else 0.0
      stats["reward_std"] = float(rewards.std()) if real.any() else 0.0
    if self.config.source in SAMPLING_SOURCES:
      correct = [self.task.reward(ex, t) for ex, t, keep in zip(
          batch.examples, batch.texts, real) if keep]
      stats["accuracy"] = float(np.mean(correct)) if correct else 0.0
    return stats

  def _updates_per_step(self) -> int:
    return self.config.ppo_epochs * self.config.minibatches

  def _log_update(self, gradient_log, step, update_index, batch, metrics,
                  tokens):
    """Appends one optimizer update to the tamper-evident gradient log."""
    coef = {k[3:]: v for k, v in metrics.items() if k.startswith("gc_")}
    reward = None
    if batch.rollout.rewards is not None:
      rewards = np.asarray(batch.rollout.rewards)
      reward = {"mean": float(rewards.mean()), "std": float(rewards.std()),
                "min": float(rewards.min()), "max": float(rewards.max())}
    skip = {"loss", "grad_norm", "kl", "clip_frac"}
    extra = {k: v for k, v in metrics.items()
             if k not in skip and not k.startswith("gc_")}
    gradient_log.append(
        step * self._updates_per_step() + update_index + 1,
        self.config.coef.name, tokens, loss=metrics["loss"],
        grad_norm=metrics["grad_norm"], coef=coef, reward=reward,
        kl=metrics.get("kl"), clip_frac=metrics.get("clip_frac"),
        extra=dict(extra, train_step=step + 1))

  def _nan_message(self, step: int, loss: float) -> str:
    steps = self.checkpointer.all_steps()
    where = (f"the last good checkpoint is step {steps[-1]} in "
             f"{self.checkpointer.directory}; rerun the same command to "
             "resume from it" if steps else
             "no checkpoint was written yet")
    return (f"loss is {loss} at step {step + 1}; stopping without saving "
            f"this state ({where})")

  # --- the loop -------------------------------------------------------------

  def _meta(self, step: int, gradient_log) -> dict:
    return {"step": step, "data_position": step,
            "gradlog_head": gradient_log.head,
            "config": self.config.to_json()}

  def train(self) -> dict:
    """Runs the remaining steps; returns the last step's metrics."""
    config = self.config
    writer = metrics_lib.MetricsWriter(self.workdir,
                                       resume_step=self.start_step)
    gradient_log = gradlog.GradientLog(
        os.path.join(self.workdir, "gradient_log.jsonl"),
        resume_step=self.start_step * self._updates_per_step(),
        expected_head=self.resume_meta.get("gradlog_head"))
    with open(os.path.join(self.workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json(indent=2))
    metrics = {}
    bar = tqdm.tqdm(total=config.steps, initial=self.start_step,
                    desc=config.method, dynamic_ncols=True,
                    disable=config.quiet)
    try:
      for step in range(self.start_step, config.steps):
        metrics = self.train_step(step, gradient_log, writer)
        if config.eval_every and (step + 1) % config.eval_every == 0:
          metrics.update(self.periodic_evaluation())
        writer.write(step + 1, metrics)
        last = step + 1 == config.steps
        self.checkpointer.save(step + 1, self.state,
                               self._meta(step + 1, gradient_log),
                               force=last, wait=last)
        bar.update(1)
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in (
            "reward_mean", "accuracy", "tokens_per_s") if k in metrics})
    finally:
      bar.close()
      writer.close()
      gradient_log.close()
      self.checkpointer.wait_until_finished()
    save_model(self.workdir, self.state["params"], self.policy.model_config)
    return metrics

  def periodic_evaluation(self) -> dict:
    """Greedy accuracy, and pass@k / maj@k when `eval_sampled.ks` is set,
    as flat metrics with their 95% bootstrap bounds (`_lo`, `_hi`)."""
    results = self.evaluate()
    ks = sampled_ks(self.config)
    if ks:
      sampled = eval_lib.sample_eval(
          self.task, self.policy.graphdef, self.state["params"],
          self.config.eval_sampled.questions, max(ks), ks, self.prompt_len,
          self.max_new, temperature=self.config.eval_sampled.temperature,
          seed=self.config.seed)
      results.update({k: v for k, v in sampled.items()
                      if k.startswith(("pass@", "maj@"))})
    metrics = {}
    for name, value in results.items():
      if name.endswith("_ci"):
        lo, hi = value
        metrics[name[:-3] + "_lo"], metrics[name[:-3] + "_hi"] = lo, hi
      elif isinstance(value, (int, float)):
        metrics[name] = value
    return metrics

  def evaluate(self, params=None, num_questions: Optional[int] = None) -> dict:
    """Greedy accuracy on the held-out split, with a bootstrap interval."""
    params = self.state["params"] if params is None else params
    n = num_questions or self.config.eval_questions
    return eval_lib.greedy_accuracy(
        self.task, self.policy.graphdef, params, n, self.prompt_len,
        self.max_new)


def warm_start(config, workdir: str) -> str:
  """Trains (or reuses) the SFT policy of the embedded task in workdir/sft."""
  sft_dir = os.path.join(os.path.abspath(workdir), "sft")
  if os.path.exists(os.path.join(sft_dir, POLICY_DIR)):
    return sft_dir
  sft = sft_config(config)
  logging.info("No init_from: training the SFT policy in %s", sft_dir)
  Trainer(sft, sft_dir).train()
  return sft_dir


def sft_config(config) -> ml_collections.ConfigDict:
  """The SFT warm-start run of an RL config on the embedded task."""
  sft = ml_collections.ConfigDict(config.to_dict())
  ws = config.warm_start
  sft.method = "sft_warm_start"
  sft.init_from = ""
  sft.source = "dataset"
  sft.reward = "none"
  sft.coef = ml_collections.ConfigDict({"name": "sft"})
  sft.normalizer = "sequence"
  sft.steps = ws.steps
  sft.batch_size = ws.batch_size
  sft.optim.lr = ws.lr
  sft.optim.warmup_steps = ws.warmup_steps
  sft.ppo_epochs = sft.minibatches = sft.micro_batches = 1
  sft.sampling.pairs = False
  sft.ref_reset_every = 0
  sft.iterative.iterations = 1
  sft.eval_every = 0
  sft.checkpoint_every = max(ws.steps // 4, 1)
  return sft
