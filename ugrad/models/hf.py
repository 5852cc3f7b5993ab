"""Hugging Face checkpoints (Qwen2, Llama) in and out of ugrad's Transformer.

A Hugging Face directory holds config.json, one or several *.safetensors files
(several come with a model.safetensors.index.json shard index) and, for the
tokenizer, tokenizer.json plus tokenizer_config.json. Tensor names map onto
ugrad parameter paths through one short table; Hugging Face Linear weights are
[out, in] and ugrad kernels [in, out], so those are transposed.

Neither torch nor transformers is imported here: tensors are read and written
with `safetensors.numpy` (bfloat16 through ml_dtypes), the tokenizer with the
`tokenizers` library.
"""

import contextlib
import json
import pathlib
from typing import Any, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers

from ugrad.models.model_config import ModelConfig
from ugrad.models.transformer import Transformer

PathLike = str | pathlib.Path

_DTYPES = ("float32", "bfloat16", "float16")
_MODEL_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
# Buffers some older exports wrote next to the weights; the model recomputes
# them from the config, so they are skipped on purpose.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Hugging Face keeps no maximum length in the ugrad config; this is written
# only because config.json needs one (default RoPE does not use it).
_MAX_POSITIONS = 32768


# ------------------------------------------------------------------ tokenizer


class HFTokenizer:
  """A `tokenizers.Tokenizer` behind ugrad's tokenizer protocol.

  Attributes:
    vocab_size: number of ids the tokenizer can produce (added tokens
      included); the model's embedding may be larger.
    pad_id: id used to pad batches (eos when the files name no pad token).
    bos_id: beginning-of-sequence id, or None.
    eos_id: end-of-sequence id; generation stops on it.
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, eos_id: int,
               pad_id: Optional[int] = None, bos_id: Optional[int] = None):
    self.tokenizer = tokenizer
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.eos_id = _check_id(eos_id, "eos_id", self.vocab_size)
    self.pad_id = _check_id(
        self.eos_id if pad_id is None else pad_id, "pad_id", self.vocab_size)
    self.bos_id = (None if bos_id is None
                   else _check_id(bos_id, "bos_id", self.vocab_size))

  @classmethod
  def from_directory(cls, path: PathLike) -> "HFTokenizer":
    """Loads tokenizer.json and the special ids from a checkpoint directory.

    Each special id comes from the first of these that names it:
    tokenizer_config.json, special_tokens_map.json (token strings), then
    generation_config.json, config.json (`*_token_id`, first element of a
    list). pad falls back to eos; bos may stay None; no eos is an error.

    Args:
      path: directory containing tokenizer.json.

    Returns:
      The wrapped tokenizer.
    """
    path = pathlib.Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
      raise FileNotFoundError(f"No tokenizer.json in {path}")
    tokenizer = tokenizers.Tokenizer.from_file(str(file))
    ids = {kind: _special_id(path, tokenizer, kind)
           for kind in ("bos", "eos", "pad")}
    if ids["eos"] is None:
      raise ValueError(
          f"No eos token in {path}: looked for eos_token in "
          "tokenizer_config.json / special_tokens_map.json and eos_token_id "
          "in generation_config.json / config.json")
    return cls(tokenizer, eos_id=ids["eos"], pad_id=ids["pad"],
               bos_id=ids["bos"])

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos or eos."""
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, dropping pad, bos, eos and other special tokens."""
    special = {self.pad_id, self.bos_id, self.eos_id}
    kept = [i for i in np.asarray(ids, np.int64).reshape(-1).tolist()
            if i not in special]
    return self.tokenizer.decode(kept, skip_special_tokens=True)

  def save(self, path: PathLike) -> None:
    """Writes tokenizer.json and a tokenizer_config.json naming the specials."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    self.tokenizer.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for kind, token_id in (("bos", self.bos_id), ("eos", self.eos_id),
                           ("pad", self.pad_id)):
      if token_id is not None:
        config[f"{kind}_token"] = self.tokenizer.id_to_token(token_id)
    _write_json(path / "tokenizer_config.json", config)


def _check_id(token_id: Any, name: str, vocab_size: int) -> int:
  if not 0 <= int(token_id) < vocab_size:
    raise ValueError(f"{name}={token_id} outside the vocabulary [0, "
                     f"{vocab_size})")
  return int(token_id)


def _special_id(path: pathlib.Path, tokenizer: tokenizers.Tokenizer,
                kind: str) -> Optional[int]:
  """The id of special token `kind` (bos/eos/pad) named in `path`'s files."""
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    token = _read_json(path / name).get(f"{kind}_token")
    if isinstance(token, dict):
      token = token.get("content")
    if token is not None:
      token_id = tokenizer.token_to_id(token)
      if token_id is None:
        raise ValueError(f"{path / name}: {kind}_token {token!r} is not in "
                         "tokenizer.json's vocabulary")
      return token_id
  for name in ("generation_config.json", "config.json"):
    token_id = _read_json(path / name).get(f"{kind}_token_id")
    if isinstance(token_id, list):
      token_id = token_id[0] if token_id else None
    if token_id is not None:
      return int(token_id)
  return None


# --------------------------------------------------------------------- config


def _qwen2_options(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """Qwen2: q/k/v always carry a bias; sliding-window layers are refused."""
  layer_types = hf.get("layer_types") or []
  window_layers = [i for i, kind in enumerate(layer_types)
                   if kind != "full_attention"]
  if (not layer_types and hf.get("use_sliding_window")
      and hf.get("sliding_window") is not None
      and hf.get("max_window_layers", 0) < hf["num_hidden_layers"]):
    window_layers = list(range(hf["max_window_layers"],
                               hf["num_hidden_layers"]))
  if window_layers:
    raise ValueError(f"{where}: sliding-window attention on layers "
                     f"{window_layers} is not supported")
  return {"qkv_bias": True}


def _llama_options(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """Llama: no bias anywhere (attention_bias would also bias o_proj)."""
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key, False):
      raise ValueError(f"{where}: {key}=true is not supported (ugrad's "
                       "o_proj and MLP have no bias)")
  return {"qkv_bias": False}


# model_type -> (architecture name, reader of the architecture's options).
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", _llama_options),
    "qwen2": ("Qwen2ForCausalLM", _qwen2_options),
}


def _model_type(hf: dict[str, Any], where: str) -> str:
  """The `_ARCHITECTURES` key of a config.json, refusing unknown ones."""
  by_name = {arch: key for key, (arch, _) in _ARCHITECTURES.items()}
  names = hf.get("architectures") or []
  if names:
    key = by_name.get(names[0])
    found = f"architecture {names[0]!r}"
  else:
    key = hf.get("model_type")
    key = key if key in _ARCHITECTURES else None
    found = f"model_type {hf.get('model_type')!r}"
  if key is None:
    raise ValueError(f"{where}: unsupported {found}; supported architectures: "
                     f"{sorted(by_name)}")
  return key


def _rope_theta(hf: dict[str, Any], where: str) -> float:
  """RoPE base from `rope_parameters` (transformers 5) or the older keys."""
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"{where}: RoPE type {rope_type!r} ({rope}) is not "
                     "supported; only default RoPE is")
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(f"{where}: partial_rotary_factor is not supported")
  if hf.get("rope_scaling") and hf.get("rope_parameters"):
    raise ValueError(f"{where}: both rope_scaling and rope_parameters set")
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict[str, Any], *, dtype: str = "float32",
                   param_dtype: Optional[str] = None,
                   where: str = "config.json") -> ModelConfig:
  """Translates a Qwen2 / Llama config.json into a `ModelConfig`.

  Args:
    hf: the parsed config.json.
    dtype: compute dtype of the ugrad model.
    param_dtype: parameter dtype; None means `dtype`.
    where: file name used in error messages.

  Returns:
    The ugrad model config.
  """
  param_dtype = param_dtype or dtype
  for name in (dtype, param_dtype):
    if name not in _DTYPES:
      raise ValueError(f"Unknown dtype {name!r}; valid: {list(_DTYPES)}")
  _, read_options = _ARCHITECTURES[_model_type(hf, where)]
  options = read_options(hf, where)
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{where}: hidden_act {hf['hidden_act']!r} is not "
                     "supported; only 'silu' is")
  heads = hf["num_attention_heads"]
  return ModelConfig(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      mlp_size=hf["intermediate_size"],
      rope_theta=_rope_theta(hf, where),
      rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      dtype=dtype,
      param_dtype=param_dtype,
      **options)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """A config.json for `config`: Qwen2 when q/k/v have a bias, else Llama."""
  model_type = "qwen2" if config.qkv_bias else "llama"
  head_dim = config.head_dim or config.hidden_size // config.num_heads
  hf = {
      "architectures": [_ARCHITECTURES[model_type][0]],
      "model_type": model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.mlp_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": _MAX_POSITIONS,
      "rms_norm_eps": config.rms_eps,
      # Both spellings: transformers >= 5 reads rope_parameters, 4.x the rest.
      "rope_theta": config.rope_theta,
      "rope_scaling": None,
      "rope_parameters": {"rope_type": "default",
                          "rope_theta": config.rope_theta},
      "tie_word_embeddings": config.tie_embeddings,
      "torch_dtype": config.param_dtype,
      "dtype": config.param_dtype,
      "use_cache": True,
  }
  if model_type == "qwen2":
    hf.update(use_sliding_window=False, sliding_window=None)
  else:
    hf.update(attention_bias=False, mlp_bias=False)
  return hf


# ---------------------------------------------------------------- name table

# (Hugging Face name inside model.layers.{i}, ugrad path inside layers[i],
# transpose [out, in] <-> [in, out]).
_LAYER_TABLE = (
    ("input_layernorm.weight", ("input_layernorm", "scale"), False),
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "scale"),
     False),
    ("self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), True),
    ("self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"), True),
    ("self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"), True),
    ("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), True),
    ("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), True),
    ("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), True),
    ("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), True),
)
_BIAS_TABLE = (
    ("self_attn.q_proj.bias", ("self_attn", "q_proj", "bias"), False),
    ("self_attn.k_proj.bias", ("self_attn", "k_proj", "bias"), False),
    ("self_attn.v_proj.bias", ("self_attn", "v_proj", "bias"), False),
)
_EMBED = "model.embed_tokens.weight"
_LM_HEAD = "lm_head.weight"


def name_table(config: ModelConfig) -> dict[str, tuple[tuple[Any, ...], bool]]:
  """Maps every Hugging Face tensor name to (ugrad path, transpose?)."""
  table = {_EMBED: (("embed_tokens", "embedding"), False),
           "model.norm.weight": (("norm", "scale"), False)}
  if not config.tie_embeddings:
    table[_LM_HEAD] = (("lm_head", "kernel"), True)
  rows = _LAYER_TABLE + (_BIAS_TABLE if config.qkv_bias else ())
  for i in range(config.num_layers):
    for hf_name, path, transpose in rows:
      table[f"model.layers.{i}.{hf_name}"] = (("layers", i) + path, transpose)
  return table


# ---------------------------------------------------------------- safetensors


def _shard_map(path: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps each tensor name to the safetensors file holding it."""
  index = path / _INDEX_FILE
  if index.is_file():
    weight_map = _read_json(index).get("weight_map")
    if not weight_map:
      raise ValueError(f"{index}: no weight_map")
    files = {name: path / file for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not file.is_file():
        raise FileNotFoundError(f"{index} names missing shard {file.name}")
    return files
  files = {}
  shards = sorted(path.glob("*.safetensors"))
  if not shards:
    raise FileNotFoundError(f"No *.safetensors file in {path}")
  for file in shards:
    with safetensors.safe_open(str(file), framework="numpy") as f:
      for name in f.keys():
        if name in files:
          raise ValueError(f"Tensor {name} is in both {files[name].name} and "
                           f"{file.name} (and there is no {_INDEX_FILE})")
        files[name] = file
  return files


def _check_names(files: dict[str, pathlib.Path], table: dict[str, Any],
                 path: pathlib.Path) -> None:
  """Refuses missing tensors and unexpected ones, naming them."""
  missing = sorted(set(table) - set(files))
  if missing:
    raise ValueError(f"Checkpoint {path} lacks tensor(s) {missing}")
  extra = sorted(name for name in set(files) - set(table)
                 if not name.endswith(_IGNORED_SUFFIXES) and name != _LM_HEAD)
  if extra:
    raise ValueError(f"Checkpoint {path} has unexpected tensor(s) {extra}; "
                     f"only names ending in {_IGNORED_SUFFIXES} are ignored")


class _TensorReader(contextlib.ExitStack):
  """Reads tensors lazily, keeping each shard open once."""

  def __init__(self, files: dict[str, pathlib.Path]):
    super().__init__()
    self._files = files
    self._open = {}

  def __call__(self, name: str) -> np.ndarray:
    file = self._files[name]
    if file not in self._open:
      self._open[file] = self.enter_context(
          safetensors.safe_open(str(file), framework="numpy"))
    return self._open[file].get_tensor(name)


def _check_tied_head(read: _TensorReader, files: dict[str, Any],
                     path: pathlib.Path) -> None:
  """A tied checkpoint may still store lm_head.weight, but only as a copy."""
  if _LM_HEAD in files and not np.array_equal(read(_LM_HEAD), read(_EMBED)):
    raise ValueError(f"Checkpoint {path} sets tie_word_embeddings but its "
                     f"{_LM_HEAD} differs from {_EMBED}")


def _load_params(abstract: nnx.State, table: dict[str, Any],
                 read: _TensorReader) -> nnx.State:
  """Fills the abstract parameter state with checkpoint tensors."""
  variables = dict(nnx.to_flat_state(abstract))
  by_path = {path: (hf_name, transpose)
             for hf_name, (path, transpose) in table.items()}
  unmapped = sorted(set(variables) - set(by_path), key=str)
  if unmapped:
    raise ValueError(f"ugrad parameters without a Hugging Face name: "
                     f"{unmapped}")
  loaded = []
  for path, variable in variables.items():
    hf_name, transpose = by_path[path]
    stored = read(hf_name)
    array = stored.T if transpose else stored
    expected = variable.get_value()
    if array.shape != expected.shape:
      raise ValueError(f"Tensor {hf_name} has shape {stored.shape}; the "
                       f"config implies {expected.shape}"
                       f"{' transposed' if transpose else ''}")
    loaded.append((path, variable.replace(
        jnp.asarray(array, dtype=expected.dtype))))
  return nnx.from_flat_state(loaded)


def from_pretrained(
    path: PathLike, dtype: str = "float32", param_dtype: Optional[str] = None
) -> tuple[Transformer, Optional[HFTokenizer]]:
  """Loads a local Hugging Face Qwen2 or Llama directory.

  Args:
    path: directory with config.json, *.safetensors (optionally sharded with
      model.safetensors.index.json) and optionally tokenizer.json.
    dtype: compute dtype of the model ("float32", "bfloat16", "float16").
    param_dtype: parameter dtype; None means `dtype`. Checkpoint tensors are
      cast to it.

  Returns:
    (model, tokenizer); tokenizer is None when there is no tokenizer.json.
  """
  path = pathlib.Path(path)
  config = config_from_hf(_read_json(path / "config.json", required=True),
                          dtype=dtype, param_dtype=param_dtype,
                          where=str(path / "config.json"))
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("Transformer has non-parameter state "
                     f"{list(nnx.to_flat_state(rest))}; cannot build it from "
                     "a checkpoint")
  table = name_table(config)
  files = _shard_map(path)
  _check_names(files, table, path)
  with _TensorReader(files) as read:
    if config.tie_embeddings:
      _check_tied_head(read, files, path)
    params = _load_params(abstract_params, table, read)
  model = nnx.merge(graphdef, params, rest)
  tokenizer = (HFTokenizer.from_directory(path)
               if (path / "tokenizer.json").is_file() else None)
  return model, tokenizer


def save_pretrained(model: Transformer, path: PathLike,
                    tokenizer: Optional[HFTokenizer] = None) -> None:
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
    raise TypeError(f"save_pretrained writes an HFTokenizer, not a "
                    f"{type(tokenizer).__name__}")
  config = model.config
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  _refuse_stale_weights(path)
  params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  table = name_table(config)
  unmapped = sorted(set(params) - {p for p, _ in table.values()}, key=str)
  if unmapped:
    raise ValueError(f"ugrad parameters without a Hugging Face name: "
                     f"{unmapped}")
  tensors = {}
  for hf_name, (param_path, transpose) in table.items():
    array = np.asarray(jax.device_get(params[param_path].get_value()))
    tensors[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  safetensors.numpy.save_file(tensors, str(path / _MODEL_FILE),
                              metadata={"format": "pt"})
  hf = config_to_hf(config)
  if tokenizer is not None:
    hf.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
              pad_token_id=tokenizer.pad_id)
    tokenizer.save(path)
  _write_json(path / "config.json", hf)


# ---------------------------------------------------------------------- files


def _refuse_stale_weights(path: pathlib.Path) -> None:
  """Old shards beside a new model.safetensors would be loaded instead."""
  stale = sorted(file.name for file in path.glob("*.safetensors*")
                 if file.name != _MODEL_FILE)
  if stale:
    raise ValueError(f"{path} already holds {stale}; save into an empty "
                     "directory or remove them")


def _read_json(file: pathlib.Path, required: bool = False) -> dict[str, Any]:
  """A JSON object from `file`; {} when optional and absent."""
  if not file.is_file():
    if required:
      raise FileNotFoundError(f"Missing {file}")
    return {}
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}:{e.lineno}: invalid JSON: {e.msg}") from e


def _write_json(file: pathlib.Path, data: dict[str, Any]) -> None:
  file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
