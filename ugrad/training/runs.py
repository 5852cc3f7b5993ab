"""A run's workdir artifacts: its config, its final model, its evaluation.

A finished run leaves WORKDIR/policy (the final parameters, an Orbax
checkpoint), WORKDIR/model.json (the model's kind and shape) and
WORKDIR/run_config.json; `init_from`, `reward_model` and
`process_reward_model` settings point at such a directory. A LoRA run saves
its policy merged and, first, its adapters alone in WORKDIR/adapters (what
a PEFT export writes out).
"""

import dataclasses
import json
import os
import tempfile
from typing import Optional

from absl import logging
from flax import nnx
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ugrad import errors
from ugrad.runtime import distributed
from ugrad.runtime import gradlog
from ugrad import models
from ugrad.models import hf_peft
from ugrad.models import lora
from ugrad.runtime import paths

POLICY_DIR = "policy"  # the final parameters of a run, for init_from
ADAPTER_DIR = "adapters"  # a LoRA run's final adapters
CONFIG_FILE = "run_config.json"
MODEL_FILE = "model.json"
EVAL_FILE = "eval.json"  # written last by the launcher: a finished run
GRADIENT_LOG = gradlog.LOG_FILE
CHECKPOINT_DIR = gradlog.CHECKPOINT_DIR

MODEL_CLASSES = {"policy": models.Transformer, "scalar": models.ScalarModel}


def write_config(workdir: str, config: ml_collections.ConfigDict):
  if not distributed.is_main():
    return
  paths.write_atomic(
      paths.resolve(workdir) / CONFIG_FILE, config.to_json(indent=2)
  )


# Config keys (and key prefixes, "x." for x's fields) that change only
# logging, evaluation or the step budget: a resumed run may change them.
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_log_every",
    "eval_every",
    "eval_sampled.",
    "eval_questions",
    "eval_split",
    "rm.eval_questions",
    "quiet",
    "profile_steps",
)

_ABSENT = object()


def config_changes(stored: Optional[str], config) -> dict[str, tuple]:
  """{dotted key: (stored value, new value)} of the keys in which `config`
  differs from `stored` (a config's JSON, as a checkpoint keeps it; None:
  nothing to compare), `RESUMABLE_CHANGES` left out."""
  if stored is None:
    return {}
  old, new = _flat(json.loads(stored)), _flat(json.loads(config.to_json()))
  return {
      key: (old.get(key, _ABSENT), new.get(key, _ABSENT))
      for key in sorted(set(old) | set(new))
      if old.get(key, _ABSENT) != new.get(key, _ABSENT)
      and not any(
          key == k or (k.endswith(".") and key.startswith(k))
          for k in RESUMABLE_CHANGES
      )
  }


def check_resume(
    workdir: str, step: int, stored: Optional[str], config, allow: bool
) -> dict[str, tuple]:
  """The `config_changes` of a run resuming in `workdir` from the
  checkpoint of step `step` (its stored config `stored`).

  Raises:
    errors.UserError: there are some and `allow` is false (the line lists
      them); the checkpoint is past `config.steps`.
  """
  if step > config.steps:
    raise errors.UserError(
        f"{workdir} was checkpointed at step {step}, past config.steps="
        f"{config.steps}; a run cannot be shortened (set steps >= {step}, "
        "or use another workdir)"
    )
  changes = config_changes(stored, config)
  where = f"{workdir} was checkpointed at step {step} with another config"
  if changes and not allow:
    raise errors.UserError(
        f"{where}: {describe_changes(changes)}; rerun with the settings it "
        "started with, or pass --allow_config_change to continue with these "
        "(recorded in the gradient log)"
    )
  if changes:
    logging.warning("%s: %s (allowed)", where, describe_changes(changes))
  return changes


def describe_changes(changes: dict[str, tuple]) -> str:
  """ "optim.lr 0.0001 -> 0.01, ..." ("absent" for a key one side lacks)."""

  def show(value):
    return "absent" if value is _ABSENT else repr(value)

  return ", ".join(
      f"{key} {show(old)} -> {show(new)}" for key, (old, new) in changes.items()
  )


def _flat(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f"{prefix}{key}."))
  return flat


def read_config(workdir: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      json.loads((paths.resolve(workdir) / CONFIG_FILE).read_text())
  )


def finished_config(run_dir: str) -> ml_collections.ConfigDict:
  """The config of a finished run in `run_dir`.

  Raises:
    errors.MissingInput: when run_dir does not exist, is not a ugrad run,
      or its training has not finished (no final policy yet).
  """
  if not os.path.isdir(run_dir):
    raise errors.MissingInput(f"--checkpoint={run_dir}: no such directory")
  config_file = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(config_file):
    raise errors.MissingInput(
        f"{run_dir} is not a ugrad run: it has no {CONFIG_FILE}"
    )
  if not (
      os.path.isfile(os.path.join(run_dir, MODEL_FILE))
      and os.path.isdir(os.path.join(run_dir, POLICY_DIR))
  ):
    raise errors.MissingInput(
        f"{run_dir} holds an unfinished run: {MODEL_FILE} and "
        f"{POLICY_DIR}/ are written when training ends (rerun its "
        "experiments.main command to resume and finish it)"
    )
  with open(config_file) as f:
    return ml_collections.ConfigDict(json.load(f))


def run_tokenizer(config: ml_collections.ConfigDict):
  """The Hugging Face tokenizer the run trained with, or None for the task's.

  A run initialised from a Hugging Face directory trains with that
  directory's tokenizer; `init_from` is followed through ugrad runs to find
  it.
  """
  path, seen = config.init_from, set()
  while path and path not in seen:
    seen.add(path)
    if os.path.isfile(os.path.join(path, MODEL_FILE)):
      config_file = os.path.join(path, CONFIG_FILE)
      if not os.path.isfile(config_file):
        return None
      with open(config_file) as f:
        path = json.load(f).get("init_from", "")
    elif is_peft_dir(path):
      path = hf_peft.base_of(path)
    elif os.path.isfile(os.path.join(path, "tokenizer.json")):
      return models.HFTokenizer.from_directory(path)
    else:
      return None
  return None


def is_finished_model(workdir: str) -> bool:
  """Whether `workdir` holds a saved model (`save_model` ran)."""
  return (paths.resolve(workdir) / MODEL_FILE).exists()


def _save_params(path, params) -> bool:
  """Writes `params` to `path` unless it exists (a resumed run saves once);
  whether it wrote."""
  if path.exists():
    return False
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
  return True


def save_adapters(workdir: str, adapters):
  """Writes a LoRA run's final adapters (`lora.split`'s second part) to
  WORKDIR/adapters, before `save_model` marks the run finished."""
  _save_params(paths.resolve(workdir) / ADAPTER_DIR, adapters)
  distributed.sync("save_adapters")


def save_model(workdir: str, params, model_config, kind: str = "policy"):
  """Writes parameters and model shape where `init_from` (or a reward-model
  setting) can load them: WORKDIR/policy and WORKDIR/model.json. A model
  already saved there is kept (a resumed run saves once)."""
  if not _save_params(paths.resolve(workdir) / POLICY_DIR, params):
    return
  if distributed.is_main():
    paths.write_atomic(
        paths.resolve(workdir) / MODEL_FILE,
        json.dumps({"kind": kind, "config": dataclasses.asdict(model_config)}),
    )
  distributed.sync("save_model")


def saved_model_config(path: str) -> models.ModelConfig:
  """The `ModelConfig` a finished run in `path` saved (its model.json)."""
  saved = json.loads((paths.resolve(path) / MODEL_FILE).read_text())
  return models.ModelConfig(**saved["config"])


def load_model(path: str, kind: str = "policy", shardings=None):
  """(graphdef, params) of a model saved by `save_model`.

  Args:
    path: the run directory.
    kind: "policy" or "scalar"; a mismatch raises.
    shardings: optional pytree of shardings matching the parameters, or a
      function from the abstract parameters to it: each array is restored
      straight into its shards. None restores onto one local device, also
      a model saved from many devices or processes.
  """
  if not is_finished_model(path):
    raise errors.MissingInput(
        f"{path} holds no finished ugrad run ({MODEL_FILE} is missing)"
    )
  saved = json.loads((paths.resolve(path) / MODEL_FILE).read_text())
  if saved["kind"] != kind:
    raise errors.UserError(
        f"{path} holds a {saved['kind']} model, not a " f"{kind} model"
    )
  model_config = saved_model_config(path)
  abstract = nnx.eval_shape(
      lambda: MODEL_CLASSES[kind](model_config, rngs=nnx.Rngs(0))
  )
  graphdef, abstract_params = nnx.split(abstract, nnx.Param)
  return graphdef, _restore(
      paths.resolve(path) / POLICY_DIR, abstract_params, shardings
  )


def load_adapters(path: str, spec):
  """The adapters (an `nnx.LoRAParam` state) a finished LoRA run in `path`
  saved, for its `lora.LoRASpec` `spec`, on one local device.

  Raises:
    errors.MissingInput: the run saved no adapters.
  """
  if not (paths.resolve(path) / ADAPTER_DIR).exists():
    raise errors.MissingInput(
        f"{path} holds no LoRA adapters ({ADAPTER_DIR}/ is missing)"
    )
  model_config = saved_model_config(path)
  abstract = nnx.eval_shape(
      lambda: lora.attach(
          models.Transformer(model_config, rngs=nnx.Rngs(0)), spec, 0
      )
  )
  _, adapters = lora.split(nnx.state(abstract, nnx.Param))
  return _restore(paths.resolve(path) / ADAPTER_DIR, adapters, None)


def _restore(directory, abstract_params, shardings):
  """`abstract_params` read from the Orbax checkpoint `directory`, each
  array into its sharding (see `load_model`)."""
  if callable(shardings):
    shardings = shardings(abstract_params)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract_params)
  abstract_params = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_params,
      shardings,
  )
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory, abstract_params)


def is_peft_dir(path: str) -> bool:
  """A PEFT adapter directory (adapter_config.json)."""
  return (paths.resolve(path) / hf_peft.CONFIG_FILE).exists()


def is_hf_dir(path: str) -> bool:
  """A Hugging Face model directory (not a ugrad run)."""
  return (
      not is_finished_model(path)
      and (paths.resolve(path) / "config.json").exists()
  )


def load_policy(path: str, shardings=None):
  """(graphdef, params, tokenizer or None) from a ugrad run, a Hugging Face
  directory, or a PEFT LoRA directory (its adapter folded into the base it
  names, itself a ugrad run or a Hugging Face directory).

  Parameters load as float32 (the trainer's master weights), each straight
  into its shards when `shardings` (as for `load_model`) is given."""
  if is_peft_dir(path):
    local = local_copy(path) if paths.is_uri(path) else path
    base = hf_peft.base_of(local)
    if is_peft_dir(base):
      raise errors.UserError(f"{path} names another adapter as its base")
    graphdef, params, tokenizer = load_policy(base, shardings)
    config = nnx.merge(graphdef, params).config
    return graphdef, hf_peft.merge_into(params, config, local), tokenizer
  if is_hf_dir(path):
    local = local_copy(path) if paths.is_uri(path) else path
    model, tokenizer = models.from_pretrained(
        local, dtype="float32", shardings=shardings
    )
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params, tokenizer
  graphdef, params = load_model(path, "policy", shardings)
  return graphdef, params, None


def local_copy(path: str) -> str:
  """A local copy of the files of directory `path` (e.g. a Hugging Face
  model on gs://, which safetensors memory-maps); each process makes its
  own under the system's temporary directory."""
  local = paths.resolve(tempfile.mkdtemp(prefix="ugrad-hf-"))
  for file in paths.resolve(path).iterdir():
    if file.is_file():
      file.copy(local / file.name)
  return str(local)


def scalar_scores(graphdef):
  """The jitted scores (params, tokens, attention_mask) -> [B, T] of a
  scalar model (critic, reward model) with `graphdef`."""
  return jax.jit(lambda p, t, m: nnx.merge(graphdef, p)(t, m))


def reward_model_scorer(path: str):
  """A numpy score function (tokens, attention_mask) -> [B, T] of a saved
  scalar (reward) model."""
  graphdef, params = load_model(path, "scalar")
  scores = scalar_scores(graphdef)
  return lambda tokens, mask: np.asarray(scores(params, tokens, mask))
