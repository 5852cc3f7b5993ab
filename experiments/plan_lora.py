"""What a LoRA plan trains and what it keeps frozen (`experiments.plan`).

Under `config.lora` the plan's model carries adapters
(`plan_compile.model_on_mesh`); the update trains the adapters alone, with
their optimizer state and gradients, and reads the base as a frozen
argument (stored as `lora.base_dtype`: an nf4 base is 4 bits a weight). The
reference is that base with the adapters off: no second copy, only a copy of
the adapters when the reference resets.
"""

import types

from flax import nnx
import jax

from experiments import plan_compile
from ugrad.models import lora


def parts(m, spec) -> types.SimpleNamespace:
  """The trained parameters and the frozen ones of a plan's model `m`
  (`plan_compile.model_on_mesh`), for its `lora.LoRASpec` `spec` (None:
  every weight trained, nothing frozen): `trained` (abstract, unsharded),
  `params` and `frozen` (ShapeDtypeStructs with their shardings, `frozen`
  None without LoRA), `shardings` of the trained ones, and
  `frozen_bytes` per chip."""
  if spec is None:
    return types.SimpleNamespace(
        trained=m.abstract_params,
        params=m.params,
        shardings=m.param_sh,
        frozen=None,
        frozen_bytes=0,
    )
  _, trained = lora.split(m.abstract_params)
  frozen, params = lora.split(m.params)
  return types.SimpleNamespace(
      trained=trained,
      params=params,
      shardings=lora.split(m.param_sh)[1],
      frozen=frozen,
      frozen_bytes=plan_compile.bytes_per_chip(frozen),
  )


def count_params(abstract_params) -> int:
  """The model's parameters (a quantized kernel's values counted once, its
  scales not)."""
  return sum(
      var.get_value().size
      for path, var in nnx.to_flat_state(abstract_params)
      if path[-2:] != ("kernel", "scale")
  )


def facts(spec, m, frozen_bytes: int) -> dict:
  """The plan's LoRA fields (none without LoRA)."""
  if spec is None:
    return {}
  _, adapters = lora.split(m.abstract_params)
  return dict(
      lora_rank=spec.rank,
      lora_base_dtype=spec.base_dtype or m.cfg.param_dtype,
      adapter_params=sum(x.size for x in jax.tree.leaves(adapters)),
      frozen_base_bytes_per_chip=frozen_bytes,
  )


def optimizer_state(config, part, replicated) -> tuple:
  """(optimizer, abstract state, its shardings) of what `part` trains, as
  the trainer places them (`update.optimizer_shardings`)."""
  # Local imports: `experiments.plan` imports this module.
  from ugrad.training import adamw  # pylint: disable=import-outside-toplevel
  from ugrad.training import update  # pylint: disable=import-outside-toplevel

  optimizer = adamw.make_optimizer(config)
  abstract_opt = jax.eval_shape(optimizer.init, part.trained)
  opt_sh = update.optimizer_shardings(optimizer, part.params, replicated)
  return optimizer, abstract_opt, opt_sh


def resident(config, cloud_topology: str, vocab_size: int) -> dict:
  """Per-chip bytes of what a run keeps on the chips besides activations
  (no compile, seconds): the frozen base, the trained parameters, their
  reference copy and gradients, and Adam's state."""
  # A local import: `experiments.plan` imports this module.
  from ugrad.training import lora_config  # pylint: disable=import-outside-toplevel

  m = plan_compile.model_on_mesh(config, cloud_topology, vocab_size)
  part = parts(m, lora_config.lora_spec(config))
  _, abstract_opt, opt_sh = optimizer_state(config, part, m.mesh.replicated)
  trained = plan_compile.bytes_per_chip(part.params)
  opt = plan_compile.bytes_per_chip(plan_compile.abstract(abstract_opt, opt_sh))
  return dict(
      frozen_base=part.frozen_bytes,
      trained=trained,
      optimizer=opt,
      total=part.frozen_bytes + 3 * trained + opt,
  )
