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

from flax import nnx
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tokenizers

from ugrad import errors
from ugrad.runtime import distributed
from ugrad.runtime import gradlog
from ugrad import models
from ugrad.models import hf_peft
from ugrad.models import lora
from ugrad.runtime import paths
from ugrad.tasks import tokenizer as tokenizer_lib

POLICY_DIR = "policy"  # the final parameters of a run, for init_from
ADAPTER_DIR = "adapters"  # a LoRA run's final adapters
CONFIG_FILE = "run_config.json"
MODEL_FILE = "model.json"
EVAL_FILE = "eval.json"  # written last by the launcher: a finished run
# A Hugging Face tokenizer a run trained with, beside its model.json.
TOKENIZER_FILE = "tokenizer.json"
GRADIENT_LOG = gradlog.LOG_FILE
CHECKPOINT_DIR = gradlog.CHECKPOINT_DIR

MODEL_CLASSES = {"policy": models.Transformer, "scalar": models.ScalarModel}


def write_config(workdir: str, config: ml_collections.ConfigDict):
  if not distributed.is_main():
    return
  paths.write_atomic(
      paths.resolve(workdir) / CONFIG_FILE, config.to_json(indent=2)
  )


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


def save_adapters(workdir: str, adapters):
  """Writes a LoRA run's final adapters (`lora.split`'s second part) to
  WORKDIR/adapters, before `save_model` marks the run finished; (re)written
  on every call, as `save_model` rewrites the policy."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(
        paths.resolve(workdir) / ADAPTER_DIR, adapters, force=True
    )
    checkpointer.wait_until_finished()
  distributed.sync("save_adapters")


def save_model(
    workdir: str, params, model_config, kind: str = "policy", tokenizer=None
):
  """Writes parameters and model shape where `init_from` (or a reward-model
  setting) can load them: WORKDIR/policy and WORKDIR/model.json, with the
  tokenizer the model was trained with (`tokenizer`: a `CharTokenizer`'s
  characters in model.json, a Hugging Face one as WORKDIR/tokenizer.json;
  None: none recorded).

  Each call (re)writes both, so a rerun of a finished run rewrites them from
  its final checkpoint and an extended run replaces them. model.json, the
  mark of a finished model (`is_finished_model`), is removed first and
  written last: a save cut short leaves a directory that a rerun
  completes, never parameters that model.json does not describe."""
  root = paths.resolve(workdir)
  if distributed.is_main():
    (root / MODEL_FILE).unlink(missing_ok=True)
  distributed.sync("save_model_start")
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(root / POLICY_DIR, params, force=True)
    checkpointer.wait_until_finished()
  if distributed.is_main():
    saved = {"kind": kind, "config": dataclasses.asdict(model_config)}
    if tokenizer is not None:
      saved["tokenizer"] = _save_tokenizer(root, tokenizer)
    paths.write_atomic(root / MODEL_FILE, json.dumps(saved))
  distributed.sync("save_model")


def _save_tokenizer(root, tokenizer) -> dict:
  """model.json's record of `tokenizer`; a Hugging Face one's vocabulary
  is written to ROOT/tokenizer.json."""
  if isinstance(tokenizer, tokenizer_lib.CharTokenizer):
    return {"chars": tokenizer.chars}
  paths.write_atomic(root / TOKENIZER_FILE, tokenizer.tokenizer.to_str())
  record = {
      "file": TOKENIZER_FILE,
      "bos_id": tokenizer.bos_id,
      "eos_id": tokenizer.eos_id,
      "pad_id": tokenizer.pad_id,
  }
  if tokenizer.chat_template is not None:
    record["chat_template"] = tokenizer.chat_template.to_dict()
  return record


def saved_tokenizer(path: str):
  """The tokenizer a finished run in `path` stored with its model (a
  `CharTokenizer` or an `HFTokenizer`), or None for a run saved before runs
  stored theirs."""
  root = paths.resolve(path)
  saved = json.loads((root / MODEL_FILE).read_text()).get("tokenizer")
  if saved is None:
    return None
  if "chars" in saved:
    return tokenizer_lib.CharTokenizer(saved["chars"])
  file = root / saved["file"]
  if not file.exists():
    raise errors.MissingInput(
        f"{path} trained with a Hugging Face tokenizer, but its {file.name} "
        "is missing"
    )
  return models.HFTokenizer(
      tokenizers.Tokenizer.from_str(file.read_text()),
      bos_id=saved["bos_id"],
      eos_id=saved["eos_id"],
      pad_id=saved["pad_id"],
      chat_template=(
          models.ChatTemplate.from_dict(saved["chat_template"])
          if "chat_template" in saved
          else None
      ),
  )


def policy_tokenizer(path: str, own, task_tokenizer, rows: int):
  """The tokenizer a policy loaded from `path` (an init_from) trains with.

  Args:
    path: the ugrad run or Hugging Face directory.
    own: the tokenizer it brings (`load_policy`'s): a Hugging Face one
      replaces the task's; a ugrad run's characters must cover the task's
      (the policy's ids are then used); None (a run saved before runs
      stored theirs): the task's.
    task_tokenizer: the task's tokenizer.
    rows: the rows of the policy's embedding.

  Raises:
    errors.UserError: a Hugging Face directory without tokenizer.json, a
      character set that lacks some of the task's characters, or more ids
      than embedding rows; the line gives the numbers.
  """
  if own is None and is_hf_dir(path):
    raise errors.MissingInput(
        f"{path} has no tokenizer.json: a Hugging Face policy trains with "
        "its own tokenizer"
    )
  tokenizer = task_tokenizer if own is None else own
  if isinstance(own, tokenizer_lib.CharTokenizer):
    task_chars = getattr(task_tokenizer, "chars", None)
    missing = sorted(set(task_chars or "") - set(own.chars))
    if task_chars == own.chars:
      tokenizer = task_tokenizer
    elif task_chars is None or missing:
      raise errors.UserError(
          f"{path} was trained with a character tokenizer of "
          f"{own.vocab_size} ids; the task's has "
          f"{task_tokenizer.vocab_size}"
          + (f" and adds {''.join(missing)!r}" if missing else "")
          + ": continue it on a task with its characters"
      )
  if tokenizer.vocab_size > rows:
    raise errors.UserError(
        f"{path}: the tokenizer has {tokenizer.vocab_size} ids but the "
        f"model's embedding has {rows} rows"
    )
  return tokenizer


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
  names, itself a ugrad run or a Hugging Face directory): the directory's
  tokenizer.json, or the one the run stored (`saved_tokenizer`).

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
  return graphdef, params, saved_tokenizer(path)


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
