"""LoRA adapters in and out of PEFT's directory format.

A PEFT LoRA directory holds adapter_config.json (rank `r`, `lora_alpha`,
`target_modules`, `base_model_name_or_path`, ...) and
adapter_model.safetensors, whose tensors are named after the adapted
module of the Hugging Face model: "base_model.model.model.layers.0.
self_attn.q_proj.lora_A.weight" [r, in] and "....lora_B.weight" [out, r].
ugrad's `lora.Adapter` holds A [in, r] and B [r, out] (x A B), so both are
transposed; the scale alpha / r is PEFT's (no rsLoRA). Module names come
from `hf_config.name_table`, as the base weights' do.
"""

import pathlib
from typing import Any

from flax import nnx
import jax
import numpy as np
import safetensors.numpy

from ugrad import errors
from ugrad.models import hf_config
from ugrad.models import lora
from ugrad.models.model_config import ModelConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_HALVES = {"a": "lora_A", "b": "lora_B"}


def _module_names(config: ModelConfig) -> dict[tuple[Any, ...], str]:
  """{ugrad Dense path: Hugging Face module name} of every projection."""
  return {
      path[:-1]: hf_name[: -len(".weight")]
      for hf_name, (path, transpose) in hf_config.name_table(config).items()
      if transpose  # The [out, in] Linear weights: the Dense kernels.
  }


def target_modules(modules: list[str], config: ModelConfig) -> list[str]:
  """PEFT's `target_modules` for the adapted Hugging Face `modules`: their
  short names ("q_proj") when each is adapted in every layer, else the full
  names (PEFT matches a name or a "."-suffix of one)."""
  short = sorted({m.rsplit(".", 1)[-1] for m in modules})
  every = {
      name
      for name in _module_names(config).values()
      if name.rsplit(".", 1)[-1] in short
  }
  return short if every == set(modules) else sorted(modules)


def save(
    path: hf_config.PathLike,
    adapters,
    spec: lora.LoRASpec,
    config: ModelConfig,
    base: str,
) -> None:
  """Writes `adapters` (`lora.split`'s second part) of a model with
  `config` as a PEFT LoRA directory (created; its files overwritten)
  whose base is `base` (adapter_config.json's base_model_name_or_path)."""
  names = _module_names(config)
  tensors, modules = {}, set()
  for key, variable in nnx.to_flat_state(adapters):
    module = names[tuple(key[:-2])]  # (..., "q_proj", "lora", "a")
    modules.add(module)
    array = np.asarray(jax.device_get(variable.get_value()))
    name = f"{_PREFIX}{module}.{_HALVES[key[-1]]}.weight"
    tensors[name] = np.ascontiguousarray(array.T)
  if not tensors:
    raise errors.UserError("no adapters to write")
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(
      tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"}
  )
  hf_config.write_json(
      path / CONFIG_FILE,
      {
          "peft_type": "LORA",
          "task_type": "CAUSAL_LM",
          "base_model_name_or_path": base,
          "r": spec.rank,
          "lora_alpha": spec.alpha,
          "lora_dropout": spec.dropout,
          "target_modules": target_modules(sorted(modules), config),
          "bias": "none",
          "fan_in_fan_out": False,
          "use_rslora": False,
          "use_dora": False,
          "init_lora_weights": True,
          "inference_mode": True,
          "modules_to_save": None,
      },
  )


def base_of(path: hf_config.PathLike) -> str:
  """The base model a PEFT LoRA directory names (base_model_name_or_path).

  Raises:
    errors.UserError: not a LoRA adapter, or one that names no base.
  """
  path = pathlib.Path(path)
  peft = hf_config.read_json(path / CONFIG_FILE, required=True)
  if peft.get("peft_type") != "LORA" or peft.get("use_dora"):
    raise errors.UserError(
        f"{path / CONFIG_FILE}: only plain LoRA adapters load (peft_type "
        f"{peft.get('peft_type')!r}, use_dora {peft.get('use_dora')})"
    )
  base = peft.get("base_model_name_or_path")
  if not base:
    raise errors.UserError(
        f"{path / CONFIG_FILE} names no base_model_name_or_path"
    )
  return base


def merge_into(params, config: ModelConfig, path: hf_config.PathLike):
  """`params` (a plain model's `nnx.Param` state with `config`) with the
  PEFT LoRA adapter in `path` folded into its kernels: W + s A^T B^T, s =
  lora_alpha / r (/ sqrt(r) under rsLoRA), each kernel keeping its dtype
  and sharding.

  Raises:
    errors.UserError: a tensor that names no projection of the model, or
      an A without its B.
  """
  path = pathlib.Path(path)
  base_of(path)
  peft = hf_config.read_json(path / CONFIG_FILE)
  r = peft["r"]
  scale = peft["lora_alpha"] / (r**0.5 if peft.get("use_rslora") else r)
  tensors = safetensors.numpy.load_file(str(path / WEIGHTS_FILE))
  by_name = {name: p for p, name in _module_names(config).items()}
  flat = dict(nnx.to_flat_state(params))
  for name in sorted(tensors):
    module, _, half = name.removeprefix(_PREFIX).rpartition(".lora_")
    if module not in by_name or half not in ("A.weight", "B.weight"):
      raise errors.UserError(
          f"{path / WEIGHTS_FILE}: tensor {name} names no LoRA half of a "
          "projection of the base model"
      )
    if half == "B.weight":
      continue
    b_name = name[: -len("A.weight")] + "B.weight"
    if b_name not in tensors:
      raise errors.UserError(f"{path / WEIGHTS_FILE}: {name} has no {b_name}")
    key = by_name[module] + ("kernel",)
    kernel = flat[key]
    w = kernel.get_value()
    delta = scale * (tensors[name].T @ tensors[b_name].T)
    flat[key] = kernel.replace(
        jax.device_put((w + delta).astype(w.dtype), w.sharding)
    )
  return nnx.from_flat_state(flat)
