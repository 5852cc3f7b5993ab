"""Start-up checks: everything that can be refused before anything heavy runs.

`check_config(config)` raises ValueError with the reason for a config that
cannot work: unknown names (listing the valid ones), a coefficient whose
needs the source and reward do not provide, a batch that does not split
into whole groups over the devices, a learned reward without its model.
A reward-model run adds `ugrad.training.reward_models.check_config`.
"""

from ugrad.training import adamw
from ugrad.training import build
from ugrad.training import lora_config
from ugrad import coefficients
from ugrad import environments
from ugrad import errors
from ugrad import models
from ugrad.runtime import profiling
from ugrad import registry
from ugrad import rewards as rewards_lib
from ugrad import tasks as tasks_lib
from ugrad.loss import NORMALIZERS
from ugrad.models import sharding as sharding_lib

TRAINERS = {
    "policy": "a policy, by the unified loss",
    "reward_model": "an outcome or process reward model",
}

_FIELD_HINTS = {
    "pair_ids": "DPO pairs come from a sampling source (online / "
    "frozen_policy) with sampling.pairs=True (KTO rows: sampling.kto=True)",
    "pair_sign": "see pair_ids",
    "group_ids": "groups come from a sampling source (online / "
    "frozen_policy)",
    "rewards": "an outcome reward (rule / model) provides rewards",
    "step_rewards": "a process reward (process / ground_truth_process) "
    "provides step rewards",
    "step_mask": "see step_rewards",
    "logp_teacher": "set config.teacher to a ugrad run workdir or a Hugging "
    "Face directory with the student's tokenizer",
}

PARAM_DTYPES = ("float32", "bfloat16")
EVAL_SPLITS = ("test", "validation")


def check_config(config) -> None:
  """Refuses a config that cannot work, saying why.

  Raises:
    ValueError: for unknown names (listing the valid ones) and for
      combinations of source, reward and coefficient that cannot work.
  """
  check_settings(config)
  _check_fields(config)
  _check_batch_split(config)
  _check_models(config)
  _check_iterative(config)
  build.sampled_ks(config)


def check_settings(config) -> None:
  """The checks that need no model: numeric ranges and registry names
  (the launcher runs them before an SFT warm start)."""
  _check_ranges(config)
  _check_names(config)
  lora_config.lora_spec(config)


# (config key, smallest valid value, whether the smallest is excluded).
_RANGES = (
    ("steps", 1, False),
    ("batch_size", 1, False),
    ("micro_batches", 1, False),
    ("minibatches", 1, False),
    ("ppo_epochs", 1, False),
    ("checkpoint_every", 1, False),
    ("keep_checkpoints", 1, False),
    ("eval_questions", 1, False),
    ("eval_every", 0, False),
    ("sample_log_every", 0, False),
    ("sampling.group_size", 1, False),
    ("sampling.questions", 1, False),
    ("sampling.max_new_tokens", 1, False),
    ("sampling.temperature", 0, False),
    ("sampling.top_k", 0, False),
    ("optim.lr", 0, True),
    ("warm_start.steps", 0, False),
)


def _check_ranges(config) -> None:
  """Numbers that cannot work (a negative step count, a zero learning
  rate) are refused, naming the key and the value."""
  for key, low, exclusive in _RANGES:
    value = config
    for part in key.split("."):
      value = value[part]
    if value < low or (exclusive and value == low):
      bound = f"> {low}" if exclusive else f">= {low}"
      raise errors.UserError(f"config.{key} must be {bound}, got {value}")
  top_p = config.sampling.top_p
  if not 0 < top_p <= 1:
    raise errors.UserError(
        f"config.sampling.top_p must be in (0, 1], got {top_p}"
    )
  profiling.parse_steps(config.get("profile_steps", ""))
  final = config.optim.get("final_fraction", 0.0)
  schedule = config.optim.get("schedule", "constant")
  if not 0 <= final <= 1:
    raise errors.UserError(
        f"config.optim.final_fraction must be in [0, 1], got {final}"
    )
  if final and schedule != "cosine":
    raise errors.UserError(
        "config.optim.final_fraction is where the cosine schedule ends; "
        f"schedule {schedule!r} has no end "
        "(set optim.schedule=cosine, or final_fraction=0)"
    )
  # .get: a config stored before the key existed trims nothing.
  bucket = config.get("trim_bucket", 0)
  if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 0:
    raise errors.UserError(
        "config.trim_bucket must be an int >= 0 (0: no trimming), got "
        f"{bucket!r}"
    )
  if config.task == "arithmetic" and (
      config.data.get("chat_template") or config.data.get("system_prompt")
  ):
    raise errors.UserError(
        "data.chat_template and data.system_prompt apply to JSONL tasks "
        "(task=gsm8k or task=math), not the embedded task"
    )


def _check_names(config) -> None:
  """Every family name exists (the error lists the valid ones)."""
  registry.lookup(TRAINERS, "trainer", config.trainer)
  registry.lookup(models.REMAT, "remat", config.remat)
  registry.lookup(models.ATTENTION, "attention", config.attention)
  registry.lookup(PARAM_DTYPES, "param_dtype", config.param_dtype)
  registry.lookup(
      adamw.SCHEDULES,
      "optim.schedule",
      config.optim.get("schedule", "constant"),
  )
  registry.lookup(tasks_lib.TASKS, "task", config.task)
  registry.lookup(EVAL_SPLITS, "eval_split", config.eval_split)
  registry.lookup(models.PRESETS, "model preset", config.model)
  build.source_class(config)
  rewards_lib.parse_spec(config.reward)
  coefficients.bind_hparams(config.coef.name, build.coef_hparams(config))
  correction = build.sampler_correction(config)[0]
  if correction != "none" and not build.source_class(config).samples:
    raise errors.UserError(
        f"sampler_correction {correction!r} weighs a sampler's tokens: "
        f"source {config.source!r} samples none"
    )
  _check_environment(config)
  if config.normalizer:  # "" is the coefficient's own
    registry.lookup(dict.fromkeys(NORMALIZERS), "normalizer", config.normalizer)


def _check_environment(config) -> None:
  """An environment exists and runs where episodes are sampled: the online
  source (a cached pool would lose the episodes' observations)."""
  name = config.get("environment", "")
  if not name:
    return
  environments.get(name)
  if config.source != "online":
    raise errors.UserError(
        f"environment {name!r} runs episodes for the 'online' source, not "
        f"{config.source!r}"
    )
  if config.episodes.max_turns < 1:
    raise errors.UserError(
        f"episodes.max_turns must be >= 1, got {config.episodes.max_turns}"
    )
  if not 0 <= config.episodes.max_error_rate <= 1:
    raise errors.UserError(
        "episodes.max_error_rate must be in [0, 1], got "
        f"{config.episodes.max_error_rate}"
    )


def provided_fields(config) -> set:
  """The optional Rollout fields the run's source, reward and trainer fill:
  the reference's log-probs always, a critic's values when the coefficient
  declares one, and the current policy's log-probs as `logp_old` for a
  source that samples none."""
  source = build.source_class(config)
  provided = rewards_lib.provided_fields(config.reward) | {"logp_ref"}
  kto = config.sampling.get("kto", False)
  provided |= source.provides(config.sampling.pairs or kto)
  if build.coefficient(config).value_targets is not None:
    provided.add("values")
  if not source.samples:
    provided.add("logp_old")  # recomputed from the current policy
  if config.get("teacher", ""):
    provided.add("logp_teacher")
  if config.get("environment", ""):
    provided |= {"step_rewards", "step_mask"}  # the turns' rewards
  return provided


def _check_fields(config) -> None:
  """The source and reward provide every Rollout field the coefficient
  needs."""
  name = config.coef.name
  needed = build.needed_fields(config)
  missing = sorted(needed - provided_fields(config))
  if missing:
    why = "; ".join(
        f"{f}: {_FIELD_HINTS.get(f, 'not provided')}" for f in missing
    )
    raise errors.UserError(
        f"coefficient {name!r} needs {', '.join(missing)}, which source "
        f"{config.source!r} with reward {config.reward!r} does not provide "
        f"({why})"
    )
  samples = build.source_class(config).samples
  g = config.sampling.group_size if samples else 1
  if "group_ids" in needed and not config.sampling.pairs and g < 2:
    raise errors.UserError(
        f"coefficient {name!r} compares samples within a group: "
        f"sampling.group_size must be >= 2, got {g}"
    )
  if (
      samples
      and not rewards_lib.provided_fields(config.reward)
      and (config.trainer == "policy")
  ):
    raise errors.UserError(
        f"source {config.source!r} samples completions that "
        f"need a reward, and reward {config.reward!r} gives none"
    )
  if config.sampling.pairs and g < 2:
    raise errors.UserError(
        "sampling.pairs builds a pair from each group: "
        f"sampling.group_size must be >= 2, got {g}"
    )
  _check_kto(config, samples)
  if config.get("teacher", "") and "logp_teacher" not in needed:
    raise errors.UserError(
        f"config.teacher is set but coefficient {name!r} does not read the "
        "teacher's log-probs (logp_teacher): clear it or use 'distill'"
    )
  if config.sampling.pairs and not samples:
    raise errors.UserError(
        "sampling.pairs needs a sampling source (online / "
        f"frozen_policy), not {config.source!r}"
    )


def _check_kto(config, samples: bool) -> None:
  """KTO's rows (a sample, a mismatched row) go with the kto coefficient."""
  kto = bool(config.sampling.get("kto", False))
  if kto != (config.coef.name == "kto"):
    raise errors.UserError(
        "coefficient 'kto' and sampling.kto=True go together (a sample "
        "followed by its mismatched row), got coefficient "
        f"{config.coef.name!r} with sampling.kto={kto}"
    )
  if kto and (
      config.sampling.pairs or not samples or config.sampling.questions < 2
  ):
    raise errors.UserError(
        "sampling.kto needs a sampling source (online / frozen_policy), "
        "sampling.pairs=False and sampling.questions >= 2 (mismatched rows "
        "take another question's completion)"
    )


def _check_batch_split(config) -> None:
  """Minibatches and micro-batches hold whole groups and fill the devices."""
  rows = build.rows_per_step(config)
  chunk = build.group_size(config)
  parts = config.minibatches * config.micro_batches
  if rows % parts or (rows // parts) % chunk:
    raise errors.UserError(
        f"{rows} rows per step cannot be split into {config.minibatches} "
        f"minibatches x {config.micro_batches} micro-batches of whole groups "
        f"of {chunk}"
    )
  shape = build.mesh_shape(config)
  shards = sharding_lib.batch_shards(shape)
  if (rows // parts) % shards:
    axes = " x ".join(f"{a}={shape[a]}" for a in sharding_lib.BATCH_AXES)
    raise errors.UserError(
        f"micro-batches of {rows // parts} rows do not divide "
        f"over the batch axes {axes} ({shards} shards)"
    )


def _check_models(config) -> None:
  """Learned rewards name their model; RL has a policy to start from."""
  terms = dict(rewards_lib.parse_spec(config.reward))
  if "model" in terms and not config.reward_model:
    raise errors.UserError(
        "the 'model' reward needs config.reward_model: the "
        "workdir of a trained outcome reward model"
    )
  if "process" in terms and not config.process_reward_model:
    raise errors.UserError(
        "the 'process' reward needs config.process_reward_model:"
        " the workdir of a trained process reward model"
    )
  if not config.init_from and (
      config.coef.name != "sft" or config.trainer != "policy"
  ):
    what = (
        "a reward model"
        if config.trainer == "reward_model"
        else f"coefficient {config.coef.name!r}"
    )
    raise errors.UserError(
        f"{what} starts from a trained policy: set config.init_from to a "
        "ugrad workdir or a Hugging Face directory (experiments.main trains "
        "the embedded task's SFT policy first when it is empty)"
    )


def _check_iterative(config) -> None:
  """Iterative RL splits the steps evenly and owns the reference resets."""
  it = config.iterative
  if it.iterations < 1:
    raise errors.UserError(
        f"iterative.iterations must be >= 1, got " f"{it.iterations}"
    )
  if it.iterations == 1:
    return
  if config.steps % it.iterations:
    raise errors.UserError(
        f"{config.steps} steps cannot be split into "
        f"{it.iterations} equal iterations"
    )
  if config.ref_reset_every:
    raise errors.UserError(
        "iterative RL resets the reference after each "
        "iteration: set ref_reset_every=0"
    )
  if it.rm_steps < 1 or not 0.0 <= it.replay < 1.0:
    raise errors.UserError(
        "iterative.rm_steps must be >= 1 and iterative.replay "
        f"in [0, 1), got {it.rm_steps} and {it.replay}"
    )
