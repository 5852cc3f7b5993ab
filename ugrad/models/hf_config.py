"""Hugging Face config.json <-> `ModelConfig`, and the tensor name table.

Also reads and writes the JSON files of a checkpoint directory (config.json,
tokenizer_config.json, ...), which the weights and the tokenizer both use.
"""

import json
import pathlib
from typing import Any, Optional

from ugrad import errors
from ugrad import registry
from ugrad.runtime import paths
from ugrad.models.model_config import ModelConfig

PathLike = str | pathlib.Path

_DTYPES = ("float32", "bfloat16", "float16")
# Hugging Face keeps no maximum length in the ugrad config; this is written
# only because config.json needs one (default RoPE does not use it).
_MAX_POSITIONS = 32768


# --------------------------------------------------------------------- config


def _qwen2_options(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """Qwen2: q/k/v always carry a bias; sliding-window layers are refused."""
  layer_types = hf.get("layer_types") or []
  window_layers = [
      i for i, kind in enumerate(layer_types) if kind != "full_attention"
  ]
  if (
      not layer_types
      and hf.get("use_sliding_window")
      and hf.get("sliding_window") is not None
      and hf.get("max_window_layers", 0) < hf["num_hidden_layers"]
  ):
    window_layers = list(
        range(hf["max_window_layers"], hf["num_hidden_layers"])
    )
  if window_layers:
    raise errors.UserError(
        f"{where}: sliding-window attention on layers "
        f"{window_layers} is not supported"
    )
  return {"qkv_bias": True}


def _llama_options(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """Llama: no bias anywhere (attention_bias would also bias o_proj)."""
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key, False):
      raise errors.UserError(
          f"{where}: {key}=true is not supported (ugrad's "
          "o_proj and MLP have no bias)"
      )
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
    raise errors.UserError(
        f"{where}: unsupported {found}; supported architectures: "
        f"{sorted(by_name)}"
    )
  return key


def _rope_theta(hf: dict[str, Any], where: str) -> float:
  """RoPE base from `rope_parameters` (transformers 5) or the older keys."""
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise errors.UserError(
        f"{where}: RoPE type {rope_type!r} ({rope}) is not "
        "supported; only default RoPE is"
    )
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise errors.UserError(f"{where}: partial_rotary_factor is not supported")
  if hf.get("rope_scaling") and hf.get("rope_parameters"):
    raise errors.UserError(
        f"{where}: both rope_scaling and rope_parameters set"
    )
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(
    hf: dict[str, Any],
    *,
    dtype: str = "float32",
    param_dtype: Optional[str] = None,
    where: str = "config.json",
) -> ModelConfig:
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
    registry.lookup(_DTYPES, "dtype", name)
  _, read_options = _ARCHITECTURES[_model_type(hf, where)]
  options = read_options(hf, where)
  if hf.get("hidden_act", "silu") != "silu":
    raise errors.UserError(
        f"{where}: hidden_act {hf['hidden_act']!r} is not "
        "supported; only 'silu' is"
    )
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
      **options,
  )


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
      "rope_parameters": {
          "rope_type": "default",
          "rope_theta": config.rope_theta,
      },
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
    (
        "post_attention_layernorm.weight",
        ("post_attention_layernorm", "scale"),
        False,
    ),
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
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


def name_table(config: ModelConfig) -> dict[str, tuple[tuple[Any, ...], bool]]:
  """Maps every Hugging Face tensor name to (ugrad path, transpose?)."""
  table = {
      EMBED: (("embed_tokens", "embedding"), False),
      "model.norm.weight": (("norm", "scale"), False),
  }
  if not config.tie_embeddings:
    table[LM_HEAD] = (("lm_head", "kernel"), True)
  rows = _LAYER_TABLE + (_BIAS_TABLE if config.qkv_bias else ())
  for i in range(config.num_layers):
    for hf_name, path, transpose in rows:
      table[f"model.layers.{i}.{hf_name}"] = (("layers", i) + path, transpose)
  return table


# ----------------------------------------------------------------------- files


def read_json(file: pathlib.Path, required: bool = False) -> dict[str, Any]:
  """A JSON object from `file`; {} when optional and absent."""
  if not file.is_file():
    if required:
      raise errors.MissingInput(f"Missing {file}")
    return {}
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{file}:{e.lineno}: invalid JSON: {e.msg}") from e


def write_json(file: pathlib.Path, data: dict[str, Any]) -> None:
  """Writes `data` to `file` as indented JSON with sorted keys."""
  paths.write_atomic(file, json.dumps(data, indent=2, sort_keys=True) + "\n")
