"""Hugging Face checkpoints (Qwen2, Llama) in and out of ugrad's Transformer.

A Hugging Face directory holds config.json, one or several *.safetensors files
(several come with a model.safetensors.index.json shard index) and, for the
tokenizer, tokenizer.json plus tokenizer_config.json. Tensor names map onto
ugrad parameter paths through one short table (`hf_config.name_table`);
Hugging Face Linear weights are [out, in] and ugrad kernels [in, out], so those
are transposed. The tokenizer is `hf_tokenizer.HFTokenizer`.

Neither torch nor transformers is imported here: tensors are read and written
with `safetensors.numpy` (bfloat16 through ml_dtypes).
"""

import contextlib
import pathlib
from typing import Any, Optional

from flax import nnx
import jax
import numpy as np
import safetensors
import safetensors.numpy

from ugrad import errors
from ugrad.models import hf_config
from ugrad.models.hf_tokenizer import HFTokenizer
from ugrad.models.transformer import Transformer

_MODEL_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
# Buffers some older exports wrote next to the weights; the model recomputes
# them from the config, so they are skipped on purpose.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _shard_map(path: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps each tensor name to the safetensors file holding it."""
  index = path / _INDEX_FILE
  if index.is_file():
    weight_map = hf_config.read_json(index).get("weight_map")
    if not weight_map:
      raise errors.UserError(f"{index}: no weight_map")
    files = {name: path / file for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not file.is_file():
        raise errors.MissingInput(f"{index} names missing shard {file.name}")
    return files
  files = {}
  shards = sorted(path.glob("*.safetensors"))
  if not shards:
    raise errors.MissingInput(f"No *.safetensors file in {path}")
  for file in shards:
    with _open(file) as f:
      for name in f.keys():
        if name in files:
          raise errors.UserError(
              f"Tensor {name} is in both {files[name].name} and "
              f"{file.name} (and there is no {_INDEX_FILE})"
          )
        files[name] = file
  return files


def _open(file: pathlib.Path):
  """`safe_open` of a weights file; a truncated, corrupt or unreadable one
  is a UserError naming it (safetensors' own error names no file)."""
  try:
    return safetensors.safe_open(str(file), framework="numpy")
  except (safetensors.SafetensorError, OSError) as e:
    raise _unreadable(file, e) from e


def _unreadable(file: pathlib.Path, e: Exception) -> errors.UserError:
  reason = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
  return errors.UserError(
      f"{file} is not a readable safetensors file ({reason}); it may be "
      "truncated or corrupt: copy or download it again"
  )


def _check_names(
    files: dict[str, pathlib.Path], table: dict[str, Any], path: pathlib.Path
) -> None:
  """Refuses missing tensors and unexpected ones, naming them."""
  missing = sorted(set(table) - set(files))
  if missing:
    raise errors.UserError(f"Checkpoint {path} lacks tensor(s) {missing}")
  extra = sorted(
      name
      for name in set(files) - set(table)
      if not name.endswith(_IGNORED_SUFFIXES) and name != hf_config.LM_HEAD
  )
  if extra:
    raise errors.UserError(
        f"Checkpoint {path} has unexpected tensor(s) {extra}; "
        f"only names ending in {_IGNORED_SUFFIXES} are ignored"
    )


class _TensorReader(contextlib.ExitStack):
  """Reads tensors lazily, keeping each shard open once."""

  def __init__(self, files: dict[str, pathlib.Path]):
    super().__init__()
    self._files = files
    self._open = {}

  def __call__(self, name: str) -> np.ndarray:
    file = self._files[name]
    if file not in self._open:
      self._open[file] = self.enter_context(_open(file))
    try:
      return self._open[file].get_tensor(name)
    except (safetensors.SafetensorError, OSError) as e:
      raise _unreadable(file, e) from e


def _check_tied_head(
    read: _TensorReader, files: dict[str, Any], path: pathlib.Path
) -> None:
  """A tied checkpoint may still store lm_head.weight, but only as a copy."""
  head, embed = hf_config.LM_HEAD, hf_config.EMBED
  if head in files and not np.array_equal(read(head), read(embed)):
    raise errors.UserError(
        f"Checkpoint {path} sets tie_word_embeddings but its "
        f"{head} differs from {embed}"
    )


def _flat_shardings(
    shardings: Any, variables: dict[tuple[Any, ...], nnx.Variable]
) -> dict[tuple[Any, ...], Optional[jax.sharding.Sharding]]:
  """The sharding of each parameter path; None (default device) for all when
  `shardings` is None."""
  if shardings is None:
    return dict.fromkeys(variables)
  flat = {
      path: s.get_value() if isinstance(s, nnx.Variable) else s
      for path, s in nnx.to_flat_state(shardings)
  }
  if set(flat) != set(variables):
    raise errors.UserError(
        "shardings do not match the parameters: missing "
        f"{sorted(set(variables) - set(flat), key=str)}, unexpected "
        f"{sorted(set(flat) - set(variables), key=str)}"
    )
  return flat


def _load_params(
    abstract: nnx.State,
    table: dict[str, Any],
    read: _TensorReader,
    shardings: Any,
) -> nnx.State:
  """Fills the abstract parameter state with checkpoint tensors, each put
  with its sharding as it is read (see `from_pretrained`)."""
  variables = dict(nnx.to_flat_state(abstract))
  by_path = {
      path: (hf_name, transpose) for hf_name, (path, transpose) in table.items()
  }
  unmapped = sorted(set(variables) - set(by_path), key=str)
  if unmapped:
    raise errors.UserError(
        f"ugrad parameters without a Hugging Face name: " f"{unmapped}"
    )
  placement = _flat_shardings(shardings, variables)
  loaded = []
  for path, variable in variables.items():
    hf_name, transpose = by_path[path]
    stored = read(hf_name)
    array = stored.T if transpose else stored
    expected = variable.get_value()
    if array.shape != expected.shape:
      raise errors.UserError(
          f"Tensor {hf_name} has shape {stored.shape}; the "
          f"config implies {expected.shape}"
          f"{' transposed' if transpose else ''}"
      )
    # Cast on the host, then copy only each device's shard to it.
    loaded.append(
        (
            path,
            variable.replace(
                jax.device_put(
                    np.asarray(array, dtype=expected.dtype), placement[path]
                )
            ),
        )
    )
  return nnx.from_flat_state(loaded)


def from_pretrained(
    path: hf_config.PathLike,
    dtype: str = "float32",
    param_dtype: Optional[str] = None,
    shardings: Any = None,
) -> tuple[Transformer, Optional[HFTokenizer]]:
  """Loads a local Hugging Face Qwen2 or Llama directory.

  Args:
    path: directory with config.json, *.safetensors (optionally sharded with
      model.safetensors.index.json) and optionally tokenizer.json.
    dtype: compute dtype of the model ("float32", "bfloat16", "float16").
    param_dtype: parameter dtype; None means `dtype`. Checkpoint tensors are
      cast to it.
    shardings: None (every tensor on the default device), a
      `jax.sharding.Sharding` for each parameter in the structure of the
      model's `nnx.Param` state, such as `sharding.param_shardings` returns,
      or a function from the abstract `nnx.Param` state to them. Each tensor
      is placed with its sharding as it is read, so the whole model is never
      on one device.

  Returns:
    (model, tokenizer); tokenizer is None when there is no tokenizer.json.
  """
  path = pathlib.Path(path)
  config_file = path / "config.json"
  config = hf_config.config_from_hf(
      hf_config.read_json(config_file, required=True),
      dtype=dtype,
      param_dtype=param_dtype,
      where=str(config_file),
  )
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise errors.UserError(
        "Transformer has non-parameter state "
        f"{list(nnx.to_flat_state(rest))}; cannot build it from "
        "a checkpoint"
    )
  if callable(shardings):
    shardings = shardings(abstract_params)
  table = hf_config.name_table(config)
  files = _shard_map(path)
  _check_names(files, table, path)
  with _TensorReader(files) as read:
    if config.tie_embeddings:
      _check_tied_head(read, files, path)
    params = _load_params(abstract_params, table, read, shardings)
  model = nnx.merge(graphdef, params, rest)
  tokenizer = (
      HFTokenizer.from_directory(path)
      if (path / "tokenizer.json").is_file()
      else None
  )
  return model, tokenizer


def save_pretrained(
    model: Transformer,
    path: hf_config.PathLike,
    tokenizer: Optional[HFTokenizer] = None,
) -> None:
  """Writes `model` as a directory `transformers` loads.

  The architecture is Qwen2ForCausalLM when q/k/v carry a bias, else
  LlamaForCausalLM. Tensors keep the model's parameter dtype; a tied model
  stores no lm_head.weight.

  Args:
    model: the ugrad model.
    path: output directory (created if needed; files are overwritten).
    tokenizer: written as tokenizer.json + tokenizer_config.json, and its
      special ids go into config.json.
  """
  if tokenizer is not None and not isinstance(tokenizer, HFTokenizer):
    raise TypeError(
        f"save_pretrained writes an HFTokenizer, not a "
        f"{type(tokenizer).__name__}"
    )
  config = model.config
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  _refuse_stale_weights(path)
  params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  table = hf_config.name_table(config)
  unmapped = sorted(set(params) - {p for p, _ in table.values()}, key=str)
  if unmapped:
    raise errors.UserError(
        f"ugrad parameters without a Hugging Face name: " f"{unmapped}"
    )
  tensors = {}
  for hf_name, (param_path, transpose) in table.items():
    array = np.asarray(jax.device_get(params[param_path].get_value()))
    tensors[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  safetensors.numpy.save_file(
      tensors, str(path / _MODEL_FILE), metadata={"format": "pt"}
  )
  hf = hf_config.config_to_hf(config)
  if tokenizer is not None:
    hf.update(
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    tokenizer.save(path)
  hf_config.write_json(path / "config.json", hf)


# ---------------------------------------------------------------------- files


def _refuse_stale_weights(path: pathlib.Path) -> None:
  """Old shards beside a new model.safetensors would be loaded instead."""
  stale = sorted(
      file.name
      for file in path.glob("*.safetensors*")
      if file.name != _MODEL_FILE
  )
  if stale:
    raise errors.UserError(
        f"{path} already holds {stale}; save into an empty "
        "directory or remove them"
    )
