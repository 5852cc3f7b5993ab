"""Every remat policy gives the gradients of no remat (it only trades memory
for recomputation), and scanned layers those of the unrolled loop."""

from flax import nnx
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad.models import layer_stack
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import sharding
from ugrad.models import transformer as tr


def _config(remat: str, **overrides) -> model_config.ModelConfig:
  """A small model (width 32, MLP 48) under `remat`."""
  fields = dict(
      vocab_size=24,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=48,
      remat=remat,
  )
  return model_config.ModelConfig(**{**fields, **overrides})


def _grads(remat: str, scan_layers: bool = False):
  cfg = _config(remat, qkv_bias=True, scan_layers=scan_layers)
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)))
  tokens = jnp.asarray(
      np.random.default_rng(0).integers(0, 24, (3, 7)), jnp.int32
  )
  mask = jnp.asarray(np.arange(7)[None, :] >= np.array([[0], [2], [4]]))

  def loss(p):
    logits = nnx.merge(graphdef, p)(tokens, mask.astype(jnp.int32))
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * mask)

  return jax.jit(jax.grad(loss))(params)


def test_policies_are_named():
  assert set(tr.REMAT_POLICIES) == {"none", "full", "dots", "dots_all"}


@pytest.mark.parametrize("remat", ["full", "dots", "dots_all"])
def test_remat_gradients_equal_no_remat(remat):
  expected, got = _grads("none"), _grads(remat)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scanned_layers_give_the_unrolled_gradients(remat):
  expected, got = _grads(remat), _grads(remat, scan_layers=True)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


def test_scanned_layers_compile_one_layer():
  """The scanned forward's program holds one layer's matmuls, the unrolled
  one a copy per layer."""
  cfg = dict(vocab_size=24, hidden_size=32, num_heads=4, num_kv_heads=2)
  tokens = jnp.zeros((2, 5), jnp.int32)
  dots = {}
  for scan in (False, True):
    model = tr.Transformer(
        model_config.ModelConfig(
            num_layers=4, mlp_size=48, scan_layers=scan, **cfg
        ),
        rngs=nnx.Rngs(0),
    )
    graphdef, params = nnx.split(model)
    text = (
        jax.jit(lambda p: nnx.merge(graphdef, p)(tokens))
        .lower(params)
        .as_text()
    )
    dots[scan] = text.count("dot_general")
  assert dots[True] < dots[False] / 2, dots


def _barrier_operand_shapes(jaxpr) -> list:
  """The operand shapes of every optimization_barrier in `jaxpr` and its
  sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "optimization_barrier":
      found.append({tuple(v.aval.shape) for v in eqn.invars})
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _barrier_operand_shapes(sub)
  return found


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_a_layer_backward_finishes_its_weight_gradients_first(remat):
  """Under remat, each layer's backward pass releases the cotangent of its
  input [B, T, D] only together with its weight gradients (the MLP's [D, F]
  kernels among them), so the compiler cannot defer the weight gradients
  and keep every layer's recomputed activations live (the v5e cliff in
  BUILD_NOTES)."""
  cfg = _config(remat, num_layers=3)
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)))
  tokens = jnp.zeros((2, 5), jnp.int32)

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p)(tokens))

  barriers = _barrier_operand_shapes(
      jax.make_jaxpr(jax.grad(loss))(params).jaxpr
  )
  releases = [s for s in barriers if {(2, 5, 32), (32, 48)} <= s]
  assert len(releases) == cfg.num_layers, barriers


def _constrained_shapes(jaxpr) -> list:
  """(operand shape, spec) of every sharding constraint in `jaxpr` and its
  sub-jaxprs that splits something over `data`."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "sharding_constraint":
      spec = eqn.params["sharding"].spec
      if "data" in jax.tree.leaves(tuple(spec)):
        found.append((tuple(eqn.invars[0].aval.shape), spec))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _constrained_shapes(sub)
  return found


def test_data_parallel_gradients_are_reduce_scattered_where_made():
  """On a data-parallel mesh each layer's weight gradients, and the
  vocabulary head's and the input lookup's shares of the tied embedding's,
  are constrained to their optimizer moments' sharding (split over data)
  inside the backward pass, so replicas reduce-scatter them there instead
  of holding them whole until the update."""
  cfg = _config("full", num_layers=3, mlp_size=64)
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)))
  tokens = jnp.zeros((2, 5), jnp.int32)

  def loss(p):
    return jnp.sum(logprobs.token_logprobs(nnx.merge(graphdef, p), tokens))

  mesh = jax.sharding.AbstractMesh((1, 2, 1, 1), sharding.MESH_AXES)
  with jax.sharding.use_abstract_mesh(mesh):
    found = _constrained_shapes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  # gate and up [D, F] kernels: F (64) split over data, in every layer.
  mlp = [spec for shape, spec in found if shape == (32, 64)]
  assert mlp == [jax.P("fsdp", ("tensor", "data"))] * (2 * cfg.num_layers)
  # The head's [D, V]: its larger dimension (D = 32) split over data, once.
  head = [spec for shape, spec in found if shape == (32, 24)]
  assert head == [jax.P(("fsdp", "data"), "tensor")], found
  # The input lookup's share [V, D], on its own.
  lookup = [spec for shape, spec in found if shape == (24, 32)]
  assert lookup == [jax.P("tensor", ("fsdp", "data"))], found
  # Without a data-parallel mesh nothing is constrained.
  assert not _constrained_shapes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)


def test_auto_is_full_on_accelerators_and_none_on_a_cpu():
  assert layer_stack.remat_policy("auto", "tpu") == "full"
  assert layer_stack.remat_policy("auto", "gpu") == "full"
  assert layer_stack.remat_policy("auto", "cpu") == "none"
  assert layer_stack.remat_policy("dots", "tpu") == "dots"
  with pytest.raises(ValueError, match="valid: auto, none, full"):
    _config("fully")
