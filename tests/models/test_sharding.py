"""Sharding rules, and sharded == unsharded on 8 fake CPU devices."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.sharding import PartitionSpec as P

from ugrad.models import model_config
from ugrad.models import sharding

_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_logical_to_spec_rules():
  sizes = {"fsdp": 8, "tensor": 4}
  spec = sharding.logical_to_spec
  rules = sharding.RULES
  assert spec(("embed", "mlp"), (64, 128), sizes, rules) == P("fsdp", "tensor")
  assert spec(("mlp", "embed"), (128, 64), sizes, ()) == P(None, None)
  # 20 does not divide over 8 devices: replicated, not an error.
  assert spec(("embed",), (20,), sizes, rules) == P(None)
  assert spec(("vocab", "embed"), (22, 64), sizes, rules) == P(None, "fsdp")
  # A mesh axis shards one dimension at most; a later rule is a fallback.
  fallback = (("embed", "fsdp"), ("mlp", "fsdp"), ("mlp", None))
  assert spec(("mlp", "embed"), (128, 64), sizes, fallback) == P("fsdp", None)
  assert spec(("embed", "mlp"), (20, 128), sizes, fallback) == P(None, "fsdp")
  with pytest.raises(ValueError, match="mesh axes: fsdp, tensor"):
    spec(("embed",), (64,), sizes, (("embed", "model"),))
  with pytest.raises(ValueError, match="do not match shape"):
    spec(("embed",), (64, 2), sizes, ())


def test_mesh_shape_fills_the_devices_or_says_why():
  assert sharding.mesh_shape({"data": -1}, 8) == dict(
      dcn_data=1, data=8, fsdp=1, tensor=1
  )
  assert sharding.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == dict(
      dcn_data=1, data=2, fsdp=2, tensor=2
  )
  with pytest.raises(ValueError, match="has 4 devices but there are 8"):
    sharding.mesh_shape({"data": 2, "tensor": 2}, 8)
  with pytest.raises(ValueError, match="8 is not a multiple of 3"):
    sharding.mesh_shape({"data": -1, "tensor": 3}, 8)
  with pytest.raises(ValueError, match="only one mesh axis may be -1"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes.*valid: dcn_data"):
    sharding.mesh_shape({"model": 2}, 8)
  with pytest.raises(ValueError, match="must be >= 1 or -1"):
    sharding.mesh_shape({"data": 0}, 8)


def test_a_mesh_that_does_not_divide_the_model_is_refused():
  cfg = model_config.preset("qwen2_2.9m", 20)  # 4 heads, 2 kv heads.
  shape = dict(dcn_data=1, data=1, fsdp=2, tensor=2)
  sharding.check_model(cfg, shape)
  with pytest.raises(
      ValueError, match="tensor=4 does not divide num_kv_heads=2"
  ):
    sharding.check_model(cfg, dict(shape, tensor=4))
  with pytest.raises(
      ValueError, match="fsdp=3 does not divide " "hidden_size=256"
  ):
    sharding.check_model(cfg, dict(shape, fsdp=3))


def test_moments_split_their_largest_dimension_over_data():
  mesh = jax.sharding.AbstractMesh((1, 2, 2, 2), sharding.MESH_AXES)
  one = jax.sharding.AbstractMesh((1, 1, 2, 2), sharding.MESH_AXES)

  def moment(spec, shape, on=mesh):
    param = jax.NamedSharding(on, jax.P(*spec))
    return sharding.moment_sharding(param, shape).spec

  # [vocab, embed] over (tensor, fsdp): the wider dimension takes data too.
  assert moment(("tensor", "fsdp"), (20, 64)) == jax.P(
      "tensor", ("fsdp", "data")
  )
  assert moment(("tensor", "fsdp"), (64, 20)) == jax.P(
      ("tensor", "data"), "fsdp"
  )
  # A replicated vector; one that data does not divide stays as it is.
  assert moment((), (6,)) == jax.P("data")
  assert moment((), (3,)) == jax.P()
  # Nothing to split over when data is 1.
  assert moment((), (64, 20), on=one) == jax.P()


_SCRIPT = textwrap.dedent("""
    import json
    from flax import nnx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from ugrad.training import build, update
    from ugrad.models import logprobs, model_config, sharding, transformer as tr

    assert jax.device_count() == 8, jax.devices()
    cfg = model_config.ModelConfig(vocab_size=20, hidden_size=64,
                                   num_layers=1, num_heads=4,
                                   num_kv_heads=4, mlp_size=96,
                                   qkv_bias=True, tie_embeddings=False)
    graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)),
                                 nnx.Param)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 20, (8, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] >= rng.integers(0, 6, (8, 1)),
                       jnp.int32)

    def fn(params, tokens, mask):
      model = nnx.merge(graphdef, params)
      # Several chunks: 2 tokens per batch shard at a time under a mesh.
      loss = lambda p: -logprobs.token_logprobs(
          nnx.merge(graphdef, p), tokens, mask, chunk_tokens=2).mean()
      return model(tokens, mask), jax.grad(loss)(params)

    ref_logits, ref_grads = jax.jit(fn)(params, tokens, mask)
    shapes = {"data8": {"data": 8}, "fsdp8": {"fsdp": 8},
              "2x2x2": {"data": 2, "fsdp": 2, "tensor": 2},
              "fsdp2_tensor4": {"fsdp": 2, "tensor": 4}}
    out = {}
    for name, requested in shapes.items():
      mesh = sharding.make_mesh(sharding.mesh_shape(requested))
      batch = jax.NamedSharding(mesh, jax.P(sharding.BATCH_AXES))
      shardings = sharding.param_shardings(params, mesh, sharding.RULES)
      placed = jax.device_put(params, shardings)
      step = jax.jit(fn, in_shardings=(shardings, batch, batch),
                     out_shardings=(batch, shardings))
      with jax.set_mesh(mesh):  # As the trainer: chunks per row shard.
        logits, grads = step(placed, tokens, mask)
      # Created in its shards (jit with out_shardings), equal to the eager
      # init bit for bit.
      _, born = build.init_params(tr.Transformer, cfg, 0, build.Mesh(mesh))
      replicated = jax.NamedSharding(mesh, jax.P())
      adam = update.init_optimizer(optax.adam(1e-3), placed, replicated)
      out[name] = {
          "moment_shards": [
              [list(x.shape), list(x.addressable_shards[0].data.shape)]
              for x in jax.tree.leaves(adam[0].mu)],
          "init": max(float(jnp.abs(a - b).max()) for a, b in
                      zip(jax.tree.leaves(born), jax.tree.leaves(params))),
          "init_shardings_match": all(
              a.sharding == b.get_value() for a, b in zip(
                  jax.tree.leaves(born),
                  jax.tree.leaves(shardings,
                                  is_leaf=lambda v: isinstance(
                                      v, nnx.Variable)))),
          "logits": float(jnp.abs(logits - ref_logits).max()),
          "grads": max(float(jnp.abs(a - b).max()) for a, b in
                       zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads))),
          "shards": {".".join(map(str, path)): [
              list(x.shape), list(x.addressable_shards[0].data.shape)]
                     for path, x in nnx.to_flat_state(placed)},
      }
    print("RESULT", json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices():
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=8",
      PYTHONPATH=str(_ROOT),
  )
  proc = subprocess.run(
      [sys.executable, "-c", _SCRIPT],
      env=env,
      cwd=_ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["data8", "fsdp8", "2x2x2", "fsdp2_tensor4"])
def test_sharded_matches_unsharded(eight_devices, mesh):
  result = eight_devices[mesh]
  assert result["init"] == 0.0 and result["init_shardings_match"]
  assert result["logits"] < 1e-5
  assert result["grads"] < 1e-5


# Slow for its fixture: the eight-device subprocess run.
@pytest.mark.slow
def test_fsdp_shards_every_matrix_data_parallel_replicates_and_splits_moments(
    eight_devices,
):
  for name, (shape, shard) in eight_devices["fsdp8"]["shards"].items():
    if name.endswith("bias"):  # [heads]-only vectors have no embed axis.
      assert shard == shape, name
    else:
      split = [i for i, (a, b) in enumerate(zip(shape, shard)) if a != b]
      assert len(split) == 1 and shard[split[0]] * 8 == shape[split[0]], name
  for name, (shape, shard) in eight_devices["data8"]["shards"].items():
    assert shard == shape, name
  # Adam's moments: each split over data (8) on one dimension it divides.
  for shape, shard in eight_devices["data8"]["moment_shards"]:
    split = [i for i, (a, b) in enumerate(zip(shape, shard)) if a != b]
    if any(n % 8 == 0 for n in shape):
      assert len(split) == 1 and shard[split[0]] * 8 == shape[split[0]]
    else:
      assert shard == shape
