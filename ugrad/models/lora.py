"""LoRA: low-rank adapters on a frozen base (Hu et al., 2021).

A targeted `transformer.Dense` (a module path matching `LoRASpec.targets`,
e.g. "layers/0/self_attn/q_proj") gets an `Adapter` as its `lora`
attribute: y = x W + b + (alpha / r) (x A) B, with A [in, r] drawn like
PEFT's (uniform, +-1/sqrt(in)) and B [r, out] zero, so the adapted model
starts equal to its base. A and B are `nnx.LoRAParam`s (a kind of
`nnx.Param`) carrying the logical axes of the kernel's input and output, so
the mesh rules shard them like the kernel they adapt.

One `nnx.Param` state of an adapted model holds the base and the adapters;
`split` separates them, `combine` puts them back (no copy), `merged` folds
the adapters into the kernels as a plain model's state (what a finished run
saves). The base with its initial (zero) adapters is the base model itself,
so a LoRA run's reference policy needs no second copy of the weights.
"""

import dataclasses
import math
import re

from flax import nnx
import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad.models import quantize

# Attention's and the MLP's projections, in every layer.
DEFAULT_TARGETS = r"(self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj)$"
# The adapters' own random stream, apart from the base's: a model built
# with adapters has the base weights of the same seed without them.
_SEED_OFFSET = 7919


@dataclasses.dataclass(frozen=True)
class LoRASpec:
  """Which projections get adapters, and their rank and scale.

  Attributes:
    rank: r, the adapters' inner width (> 0).
    alpha: the scale is alpha / r.
    targets: a regular expression searched in each `Dense` module's path
      ("layers/0/mlp/up_proj", "lm_head").
    base_dtype: how the targeted kernels are stored while frozen
      (`ugrad.models.quantize`: "" keeps `param_dtype`; "float32",
      "bfloat16", "int8", "nf4").
    dropout: the rate of the dropout on an adapter's inputs, in training
      only (`use_dropout`), as PEFT's `lora_dropout`.
  """

  rank: int
  alpha: float
  targets: str = DEFAULT_TARGETS
  base_dtype: str = ""
  dropout: float = 0.0

  def __post_init__(self):
    if self.rank <= 0:
      raise errors.UserError(f"lora.rank must be > 0, got {self.rank}")
    if self.alpha <= 0:
      raise errors.UserError(f"lora.alpha must be > 0, got {self.alpha}")
    quantize.check_base_dtype(self.base_dtype)
    if not 0 <= self.dropout < 1:
      raise errors.UserError(
          f"lora.dropout must be in [0, 1), got {self.dropout}"
      )


class DropoutSeeds(nnx.Variable):
  """[B, 2] int32 of a training forward pass (`use_dropout`): each row's
  seed and the adapter's index. Never in a saved or trained state."""


class Adapter(nnx.Module):
  """(alpha / r) x A B of a Dense's [N, in] inputs."""

  def __init__(self, dense, spec: LoRASpec, *, rngs: nnx.Rngs):
    d_in, d_out = dense.in_features, dense.out_features
    axes = dense.kernel.get_metadata().get("logical_axes") or (None, None)
    dtype = dense.kernel[...].dtype
    bound = 1.0 / math.sqrt(d_in)
    self.a = nnx.LoRAParam(
        jax.random.uniform(
            rngs.params(), (d_in, spec.rank), dtype, -bound, bound
        ),
        logical_axes=(axes[0], None),
    )
    self.b = nnx.LoRAParam(
        jnp.zeros((spec.rank, d_out), dtype), logical_axes=(None, axes[1])
    )
    self.scale = spec.alpha / spec.rank
    self.dtype = dense.dtype
    self.dropout = spec.dropout
    self.seeds = nnx.data(None)  # DropoutSeeds in training (`use_dropout`).

  def __call__(self, x: jax.Array) -> jax.Array:
    a = self.a[...].astype(self.dtype)
    b = self.b[...].astype(self.dtype)
    x = x.astype(self.dtype)
    if self.seeds is not None and self.dropout > 0:
      x = _dropout(x, self.seeds[...], self.dropout)
    return (x @ a @ b) * jnp.asarray(self.scale, self.dtype)

  def product(self) -> jax.Array:
    """(alpha / r) A B, [in, out], in the adapters' dtype."""
    return self.scale * (self.a[...] @ self.b[...])


def _dropout(x: jax.Array, seeds: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout of x [B * T, in], row b's mask drawn from seeds[b]
  (its seed, the adapter's index): the same rows get the same masks
  however the batch is split into micro-batches."""
  rows = seeds.shape[0]

  def keep(seed):
    key = jax.random.fold_in(jax.random.key(seed[0]), seed[1])
    return jax.random.bernoulli(
        key, 1 - rate, (x.shape[0] // rows, *x.shape[1:])
    )

  mask = jax.vmap(keep)(seeds).reshape(x.shape)
  return jnp.where(mask, x / jnp.asarray(1 - rate, x.dtype), 0).astype(x.dtype)


def use_dropout(model, seeds: jax.Array) -> None:
  """Turns on the adapters' dropout in `model` (in place; a model merged
  for one training forward pass): row b of the batch draws its masks from
  `seeds[b]` (int32 [B]), each adapter from its own stream."""
  adapters = [m for _, m in nnx.iter_graph(model) if isinstance(m, Adapter)]
  for index, adapter in enumerate(adapters):
    adapter.seeds = DropoutSeeds(
        jnp.stack([seeds, jnp.full_like(seeds, index)], axis=-1)
    )


def dense_paths(model) -> dict:
  """{"layers/0/self_attn/q_proj": the Dense, ...} of a model."""
  # A local import: `transformer` is the module LoRA adapts.
  from ugrad.models import transformer  # pylint: disable=import-outside-toplevel

  return {
      "/".join(str(p) for p in path): module
      for path, module in nnx.iter_graph(model)
      if isinstance(module, transformer.Dense)
  }


def attach(model, spec: LoRASpec, seed: int):
  """`model` with an `Adapter` on every Dense whose path matches
  `spec.targets`, its kernel stored as `spec.base_dtype` (changed in place,
  and returned).

  Raises:
    UserError: when the pattern matches no module, listing the paths.
  """
  found = dense_paths(model)
  chosen = sorted(p for p in found if re.search(spec.targets, p))
  if not chosen:
    raise errors.UserError(
        f"lora.targets {spec.targets!r} matches no module; the model's "
        f"projections: {', '.join(sorted(found))}"
    )
  rngs = nnx.Rngs(seed + _SEED_OFFSET)
  for path in chosen:
    found[path].lora = Adapter(found[path], spec, rngs=rngs)
    quantize.freeze_kernel(found[path], spec.base_dtype)
  return model


def adapted(model_cls, spec: LoRASpec, seed: int):
  """A constructor like `model_cls(config, rngs=...)` whose models carry
  adapters, drawn from `seed`'s own stream."""

  def make(config, *, rngs: nnx.Rngs):
    return attach(model_cls(config, rngs=rngs), spec, seed)

  return make


def _is_adapter(path, _) -> bool:
  return "lora" in path


def split(params) -> tuple:
  """(base, adapters) of an adapted model's `nnx.Param` state."""
  adapters, base = nnx.split_state(params, _is_adapter, ...)
  return base, adapters


def combine(base, adapters):
  """The full state of the base under the adapters; a full state in place
  of `adapters` passes through (its own base wins)."""
  return nnx.merge_state(base, adapters)


def merged(params, spec: LoRASpec):
  """A plain (adapter-free) model's state from an adapted one's: each
  adapted kernel W + (alpha / r) A B (W dequantized), in the adapters'
  dtype (the kernel's before it was frozen)."""
  base, adapters = split(params)
  flat = dict(nnx.to_flat_state(quantize.dequantized(base)))
  pairs = dict(nnx.to_flat_state(adapters))
  scale = spec.alpha / spec.rank
  for path, a in pairs.items():
    if path[-1] != "a":
      continue
    b = pairs[path[:-1] + ("b",)][...]
    kernel = flat[path[:-2] + ("kernel",)]
    w = kernel[...]
    flat[path[:-2] + ("kernel",)] = kernel.replace(
        (w.astype(a.dtype) + scale * (a[...] @ b)).astype(a.dtype)
    )
  return nnx.from_flat_state(flat)
