"""What a config builds: the task, the policy, the mesh, the optimizer.

Pure construction, no training: `ugrad.training.trainer` and the launchers
call these, and `ugrad.training.validate` reads the same config helpers.
"""

import copy
import dataclasses
from typing import Any

from flax import nnx
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from ugrad import coefficients
from ugrad.coefficients import corrections
from ugrad import environments
from ugrad import errors
from ugrad import models
from ugrad import sampling
from ugrad.training import runs
from ugrad.training import lora_config
from ugrad import sources as sources_lib
from ugrad.sampling import episodes as episodes_lib
from ugrad.sampling import stats
from ugrad import tasks as tasks_lib
from ugrad.models import lora as lora_lib
from ugrad.models import sharding as sharding_lib

# ---------------------------------------------------------------------------
# Reading the config.
# ---------------------------------------------------------------------------


def coef_hparams(config) -> dict:
  """The coefficient's hyper-parameters (config.coef without its name)."""
  return {k: v for k, v in config.coef.items() if k != "name"}


def coefficient(config) -> coefficients.Coefficient:
  return coefficients.get(config.coef.name)


def sampler_correction(config) -> tuple:
  """(name, floor, cap) of the run's sampler correction, the mode's
  default bounds filled in (`ugrad.coefficients.corrections`)."""
  name = config.get("sampler_correction", "none")
  floor, cap = corrections.bounds(
      name, config.get("sampler_floor"), config.get("sampler_cap")
  )
  return name, floor, cap


def normalizer(config) -> str:
  """The N of the run's unified loss: `config.normalizer`, or when it is
  empty the coefficient's own (`Coefficient.normalizer`, the one its
  textbook objective is written with)."""
  return config.normalizer or coefficient(config).normalizer


def normalizer_deviation(config) -> str:
  """A line saying the run's normaliser is not its coefficient's own, or
  "" when it is (a deviation is allowed, and printed at start-up)."""
  own = coefficient(config).normalizer
  if normalizer(config) == own:
    return ""
  return (
      f"normalizer {config.normalizer!r} is not coefficient "
      f"{config.coef.name!r}'s own {own!r}: the gradient is not its "
      "textbook objective's (a deviation, as configured)"
  )


def needed_fields(config) -> set:
  """The optional Rollout fields the run's coefficient reads."""
  return coefficients.required_fields(config.coef.name, coef_hparams(config))


def source_class(config):
  return sources_lib.get(config.source)


def group_size(config) -> int:
  """Rows per group: G for a sampling source, 2 for pairs or KTO rows (a
  sample and its mismatched row), else 1."""
  if not source_class(config).samples:
    return 1
  if config.sampling.pairs or config.sampling.get("kto", False):
    return 2
  return config.sampling.group_size


def train_temperature(config) -> float:
  """The temperature T of the trainer's log-probs: `sampling.temperature`
  when the source samples a policy (its samples come from softmax(z / T),
  so the loss, the reference and the old log-probs are taken under it and
  the ratio is 1 on-policy), else 1. Greedy sampling (T = 0) trains the
  untempered model. Evaluation and the saved model are never tempered."""
  temperature = float(config.sampling.temperature)
  if not source_class(config).samples or temperature == 0:
    return 1.0
  return temperature


def rows_per_step(config) -> int:
  """Rows of the batch a step draws."""
  if not source_class(config).samples:
    return config.batch_size
  if config.sampling.pairs:
    return 2 * config.sampling.questions
  rows = config.sampling.questions * config.sampling.group_size
  return 2 * rows if config.sampling.get("kto", False) else rows


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
  return stats.parse_ks(config.eval_sampled.ks.split(","), "eval_sampled.ks")


def compute_dtype(config) -> str:
  """The model's compute dtype: "auto" is bfloat16 on GPU/TPU, float32 on
  CPU. Parameters and optimizer state are in `config.param_dtype`."""
  if config.compute_dtype != "auto":
    return config.compute_dtype
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


# ---------------------------------------------------------------------------
# Building.
# ---------------------------------------------------------------------------


def make_task(config):
  """The embedded task (`task_kwargs`) or a JSONL task (`data` paths)."""
  if config.task == "arithmetic":
    kwargs = dict(config.task_kwargs)
    kwargs["digits"] = tuple(kwargs["digits"])
    kwargs.setdefault("seed", config.seed)
  else:
    kwargs = {
        "train_path": config.data.train_path or None,
        "test_path": config.data.test_path or None,
        "validation_path": config.data.validation_path or None,
        # Runs saved before chat templates have neither field.
        "chat_template": config.data.get("chat_template", False),
        "system_prompt": config.data.get("system_prompt", ""),
    }
  return tasks_lib.make_task(config.task, **kwargs)


def prompt_length(task, max_tokens: int = 0) -> int:
  """The longest encoded prompt over the task's splits (the fixed P).

  Args:
    task: the task.
    max_tokens: the longest prompt allowed (0: no limit), so that one
      over-long question stops the run at start-up, not out of memory at
      step 1.

  Raises:
    errors.UserError: naming the first prompt over `max_tokens` ("path:line"
      for a row read from a file).
  """
  tok = task.tokenizer
  longest = 0
  for split in task_splits(task):
    for i, ex in enumerate(task.examples(split)):
      n = len(tasks_lib.encode_prompt(tok, task.prompt(ex)))
      if max_tokens and n > max_tokens:
        where = ex.source or f"{split} example {i}"
        raise errors.UserError(
            f"{where}: the prompt has {n} tokens, more than "
            f"data.max_prompt_tokens={max_tokens} (raise it, or drop the row)"
        )
      longest = max(longest, n)
  return longest


def task_splits(task) -> tuple[str, ...]:
  """train, test and, when the task has one, validation."""
  try:
    task.examples("validation")
  except ValueError:
    return ("train", "test")
  return ("train", "test", "validation")


@dataclasses.dataclass
class Mesh:
  """The device mesh of a run and the shardings derived from it."""

  mesh: jax.sharding.Mesh
  rules: Any = sharding_lib.RULES

  @property
  def shape(self) -> dict:
    return dict(self.mesh.shape)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def batch(self) -> NamedSharding:
    """Rows over the batch axes (dcn_data, data, fsdp)."""
    return NamedSharding(self.mesh, PartitionSpec(sharding_lib.BATCH_AXES))

  def params(self, abstract_params) -> Any:
    """NamedShardings of a parameter state, from its logical axis names."""
    return sharding_lib.param_shardings(abstract_params, self.mesh, self.rules)


def mesh_shape(config) -> dict:
  """The run's mesh axis sizes, -1 resolved (see `sharding.mesh_shape`)."""
  return sharding_lib.mesh_shape(config.mesh.to_dict())


def make_mesh(config) -> Mesh:
  return Mesh(sharding_lib.make_mesh(mesh_shape(config)))


def init_params(model_cls, model_config, seed: int, mesh: Mesh, part=None):
  """(graphdef, params) of a freshly initialised model, each array created
  directly in its shards: `eval_shape` of the init gives the logical axes,
  the mesh rules give shardings, and the init is jitted with them as
  out_shardings, so no host ever holds the whole model. `part`: a function
  of the params that keeps the part to create (e.g. LoRA's adapters)."""
  part = part or (lambda params: params)
  abstract = nnx.eval_shape(
      lambda: model_cls(model_config, rngs=nnx.Rngs(seed))
  )
  graphdef, abstract_params = nnx.split(abstract, nnx.Param)
  abstract_params = part(abstract_params)

  def init():
    model = model_cls(model_config, rngs=nnx.Rngs(seed))
    return part(nnx.split(model, nnx.Param)[1])

  params = jax.jit(init, out_shardings=mesh.params(abstract_params))()
  return graphdef, params


@dataclasses.dataclass
class Policy:
  """A policy's graph definition and what it runs under."""

  graphdef: Any
  model_config: Any
  tokenizer: Any
  lora: Any = None  # the `lora.LoRASpec` of its adapters, or None


def policy_graphdef(model_config):
  abstract = nnx.eval_shape(
      lambda: models.Transformer(model_config, rngs=nnx.Rngs(0))
  )
  return nnx.split(abstract, nnx.Param)[0]


def make_policy(config, tokenizer, mesh: Mesh):
  """(Policy, params in `config.param_dtype` on the mesh) of
  `config.init_from` or, when it is empty, of the `config.model` preset
  freshly initialised, for a task with `tokenizer`.

  A Hugging Face policy brings its own tokenizer, which replaces the task's:
  the Policy's is the one to use (`with_tokenizer`).

  With `config.lora`, the graph carries adapters and the params are the
  base's and the initial adapters' (`lora.split` separates them).
  """
  spec = lora_config.lora_spec(config)
  if config.init_from:
    graphdef, params, own = runs.load_policy(config.init_from, mesh.params)
    if isinstance(own, models.HFTokenizer) and config.task == "arithmetic":
      raise errors.UserError(
          "a Hugging Face policy cannot be trained on the "
          "embedded task's character vocabulary"
      )
    loaded = nnx.merge(graphdef, params).config
    tokenizer = runs.policy_tokenizer(
        config.init_from, own, tokenizer, loaded.vocab_size
    )
    model_config = dataclasses.replace(
        loaded,
        dtype=compute_dtype(config),
        param_dtype=config.param_dtype,
        remat=config.remat,
        attention=config.attention,
        scan_layers=config.scan_layers,
    )
    params = jax.tree.map(lambda x: x.astype(config.param_dtype), params)
    sharding_lib.check_model(model_config, mesh.shape)
    graphdef = policy_graphdef(model_config)
    if spec is not None:  # Fresh adapters over the loaded base.
      graphdef, adapters = init_params(
          lora_lib.adapted(models.Transformer, spec, config.seed),
          model_config,
          config.seed,
          mesh,
          part=lambda params: lora_lib.split(params)[1],
      )
      if spec.base_dtype:
        params = frozen_base(model_config, params, spec, mesh)
      params = lora_lib.combine(params, adapters)
  else:
    model_config = models.preset(
        config.model,
        tokenizer.vocab_size,
        dtype=compute_dtype(config),
        param_dtype=config.param_dtype,
        remat=config.remat,
        attention=config.attention,
        scan_layers=config.scan_layers,
    )
    sharding_lib.check_model(model_config, mesh.shape)
    model_cls = models.Transformer
    if spec is not None:
      model_cls = lora_lib.adapted(model_cls, spec, config.seed)
    graphdef, params = init_params(model_cls, model_config, config.seed, mesh)
  return Policy(graphdef, model_config, tokenizer, spec), params


def frozen_base(model_config, params, spec, mesh: Mesh):
  """A loaded plain policy's `params` as the frozen base of `spec`'s
  adapters: the targeted kernels stored as `spec.base_dtype`
  (`ugrad.models.quantize`), quantized once, on the mesh; the float
  arrays are donated."""
  graphdef = policy_graphdef(model_config)

  def freeze(params):
    model = lora_lib.attach(nnx.merge(graphdef, params), spec, 0)
    return lora_lib.split(nnx.state(model, nnx.Param))[0]

  abstract = jax.eval_shape(freeze, params)
  return jax.jit(freeze, out_shardings=mesh.params(abstract), donate_argnums=0)(
      params
  )


def with_tokenizer(task, tokenizer):
  """`task` if it has `tokenizer`, else a shallow copy of it that has."""
  if task.tokenizer is tokenizer:
    return task
  task = copy.copy(task)
  task.tokenizer = tokenizer
  return task


def sampling_config(
    config, tokenizer, num_samples: int, *, truncate: bool = True
) -> sampling.SamplingConfig:
  """How a run samples: `config.sampling`'s budget and temperature, the
  tokenizer's EOS and padding, `num_samples` per prompt and, when
  `truncate`, its top-k and top-p (0 and 1: all tokens)."""
  top_k = top_p = None
  if truncate:
    top_k = config.sampling.top_k or None
    top_p = config.sampling.top_p if config.sampling.top_p < 1 else None
  return sampling.SamplingConfig(
      max_new_tokens=config.sampling.max_new_tokens,
      eos_id=tokenizer.eos_id,
      pad_id=tokenizer.pad_id,
      num_samples=num_samples,
      temperature=config.sampling.temperature,
      top_k=top_k,
      top_p=top_p,
  )


def episode_spec(config, task):
  """The run's `EpisodeSpec` (`config.environment` and `config.episodes`),
  or None for single-turn sampling."""
  name = config.get("environment", "")
  if not name:
    return None
  return episodes_lib.EpisodeSpec(
      environments.make(name, task),
      config.episodes.max_turns,
      config.episodes.max_error_rate,
  )


def make_sampler(config, policy, prompt_len: int, mesh: Mesh, task):
  """The policy's sampler: `sampling.make_sampler`, or an
  `episodes.EpisodeSampler` when the run has an environment."""
  sampling_cfg = sampling_config(
      config, policy.tokenizer, config.sampling.group_size
  )
  spec = episode_spec(config, task)
  if spec is None:
    return sampling.make_sampler(
        policy.graphdef, policy.tokenizer, prompt_len, sampling_cfg, mesh.mesh
    )
  return episodes_lib.EpisodeSampler(
      policy.graphdef,
      policy.tokenizer,
      prompt_len,
      sampling_cfg,
      spec,
      mesh.mesh,
  )


def scalar_from_policy(model_config, policy_params, seed: int, mesh: Mesh):
  """A scalar model (critic, reward model) on the mesh: the policy's
  backbone and a zero-initialised head."""
  graphdef, params = init_params(
      models.ScalarModel, model_config, seed + 1, mesh
  )
  pure = nnx.to_pure_dict(params)
  policy = nnx.to_pure_dict(policy_params)
  for key in pure:
    if key in policy:
      pure[key] = policy[key]
  nnx.replace_by_pure_dict(params, pure)
  return graphdef, params
