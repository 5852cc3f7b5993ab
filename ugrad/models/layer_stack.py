"""How training's decoder layers run: each under its remat policy, one after
another or as one `lax.scan` (`ModelConfig.remat`, `ModelConfig.scan_layers`).
The cached (sampling) path runs its layers itself."""

from flax import nnx
import jax
import jax.numpy as jnp

from ugrad import registry
from ugrad.models import sharding

# What a decoder layer keeps for the backward pass (`ModelConfig.remat`):
# None keeps everything (no jax.checkpoint); otherwise a jax.checkpoint policy.
# "dots" keeps the outputs of the matmuls without batch dimensions (the
# projections and the MLP) and recomputes attention's batched einsums and the
# elementwise work; "dots_all" keeps every matmul output, the attention
# scores and their weighted values included (more memory, less recompute).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
}


def remat_policy(name: str, platform: str | None = None) -> str:
  """The policy `ModelConfig.remat` names on `platform` (default: JAX's
  backend): "auto" is "full" on a TPU or GPU (a model at real size does not
  keep every layer's activations; `experiments.plan` shows what else
  fits), "none" on a CPU (the small models of tests and the embedded
  task)."""
  if name != "auto":
    return name
  return "none" if (platform or jax.default_backend()) == "cpu" else "full"


def _layer_outputs(layer, x, rope, mask, remat: str):
  """A decoder layer's outputs [B, T, D] (no cache), under `remat`."""
  policy = registry.lookup(REMAT_POLICIES, "remat", remat_policy(remat))
  if policy is None:
    return layer(x, rope, mask)[0]
  # jax.checkpoint of a pure function of the layer's state, not nnx.remat:
  # nnx.remat writes the state back to the layer, which fails when its
  # variables come from different traces (a LoRA base frozen outside the
  # gradient, its adapters inside).
  graphdef, state = nnx.split(layer)
  forward = jax.checkpoint(
      lambda state, x, rope, mask: nnx.merge(graphdef, state)(x, rope, mask)[0],
      policy=policy,
  )
  return _ordered_backward(forward, state)(state, x, rope, mask)


def _ordered_backward(forward, state):
  """`forward` (a jax.checkpoint) whose backward pass hands on its input's
  cotangent only together with its weight gradients.

  Nothing else needs a layer's weight gradients before the optimizer (the
  global-norm clip waits for all of them), so the compiler may defer them,
  and with them the recomputed activations they read: XLA for TPU v5e did
  so for a 24-layer model, 13.15 GB of temporaries per chip, 5.05 with
  this ordering (BUILD_NOTES, "the v5e cliff"). One optimization barrier
  over what the backward returns makes the order a data dependency; the
  gradients are jax.checkpoint's, and reach it already where their
  optimizer moments live (`sharding.constrain_as_moments` of the layer's
  `state`): reduced over data-parallel replicas layer by layer, each
  replica keeping its slice.
  """

  @jax.custom_vjp
  def ordered(*args):
    return forward(*args)

  def ordered_fwd(*args):
    return jax.vjp(forward, *args)

  def ordered_bwd(vjp, cotangent):
    grads, *rest = vjp(cotangent)
    grads = sharding.constrain_as_moments(grads, state)
    return jax.lax.optimization_barrier((grads, *rest))

  ordered.defvjp(ordered_fwd, ordered_bwd)
  return ordered


def _scanned_layers(layers, x, rope, mask, remat: str):
  """The decoder layers as one `lax.scan` over their stacked parameters
  (`ModelConfig.scan_layers`): the same arithmetic as the unrolled loop,
  compiled once instead of once per layer. The stack is built per call, a
  transient copy of the layers' weights."""
  splits = [nnx.split(layer) for layer in layers]
  graphdef = splits[0][0]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(s for _, s in splits))

  def body(x, state):
    layer = nnx.merge(graphdef, state)
    return (
        sharding.constrain_rows(_layer_outputs(layer, x, rope, mask, remat)),
        None,
    )

  return jax.lax.scan(body, x, stacked)[0]


def run_layers(layers: list, x, rope, mask, remat: str, scan: bool):
  """x [B, T, D] through every decoder layer (no cache), rows kept on the
  mesh's batch axes between layers."""
  if scan:
    return _scanned_layers(layers, x, rope, mask, remat)
  for layer in layers:
    x = sharding.constrain_rows(_layer_outputs(layer, x, rope, mask, remat))
  return x
