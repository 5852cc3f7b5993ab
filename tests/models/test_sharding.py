"""Sharding rules, and sharded == unsharded on 8 fake CPU devices."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from ugrad.models import sharding

_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_logical_to_spec_rules():
  sizes = {"data": 8}
  spec = sharding.logical_to_spec
  assert spec(("embed", "mlp"), (64, 128), sizes, sharding.FSDP_RULES) == P(
      "data", None)
  assert spec(("mlp", "embed"), (128, 64), sizes, ()) == P(None, None)
  # 20 does not divide over 8 devices: replicated, not an error.
  assert spec(("embed",), (20,), sizes, sharding.FSDP_RULES) == P(None)
  # A mesh axis shards one dimension at most; a later rule is a fallback.
  rules = (("embed", "data"), ("mlp", "data"), ("mlp", None))
  assert spec(("mlp", "embed"), (128, 64), sizes, rules) == P("data", None)
  assert spec(("embed", "mlp"), (20, 128), sizes, rules) == P(None, "data")
  with pytest.raises(ValueError, match="mesh axes: data"):
    spec(("embed",), (64,), sizes, (("embed", "model"),))
  with pytest.raises(ValueError, match="do not match shape"):
    spec(("embed",), (64, 2), sizes, ())


def test_unknown_rules_name():
  assert sharding.get_rules("fsdp") == sharding.FSDP_RULES
  with pytest.raises(ValueError, match="valid: data_parallel, fsdp"):
    sharding.get_rules("tensor")


_SCRIPT = textwrap.dedent("""
    import json
    from flax import nnx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ugrad.models import model_config, sharding, transformer as tr

    assert jax.device_count() == 8, jax.devices()
    cfg = model_config.ModelConfig(vocab_size=20, hidden_size=64,
                                   num_layers=1, num_heads=4,
                                   num_kv_heads=2, mlp_size=96,
                                   qkv_bias=True, tie_embeddings=False)
    graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)),
                                 nnx.Param)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 20, (8, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] >= rng.integers(0, 6, (8, 1)),
                       jnp.int32)

    def fn(params, tokens, mask):
      model = nnx.merge(graphdef, params)
      loss = lambda p: -tr.token_logprobs(nnx.merge(graphdef, p), tokens,
                                          mask).mean()
      return model(tokens, mask), jax.grad(loss)(params)

    ref_logits, ref_grads = jax.jit(fn)(params, tokens, mask)
    mesh = sharding.data_mesh()
    batch = jax.NamedSharding(mesh, jax.P("data"))
    out = {}
    for name, rules in sharding.RULES.items():
      shardings = sharding.param_shardings(params, mesh, rules)
      placed = jax.device_put(params, shardings)
      step = jax.jit(fn, in_shardings=(shardings, batch, batch),
                     out_shardings=(batch, shardings))
      logits, grads = step(placed, tokens, mask)
      out[name] = {
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
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=str(_ROOT))
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=_ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("rules", ["data_parallel", "fsdp"])
def test_sharded_matches_unsharded(eight_devices, rules):
  result = eight_devices[rules]
  assert result["logits"] < 1e-5
  assert result["grads"] < 1e-5


# Slow for its fixture: the eight-device subprocess run.
@pytest.mark.slow
def test_fsdp_shards_every_matrix_and_data_parallel_replicates(eight_devices):
  for name, (shape, shard) in eight_devices["fsdp"]["shards"].items():
    if name.endswith("bias"):  # [heads]-only vectors have no embed axis.
      assert shard == shape, name
    else:
      split = [i for i, (a, b) in enumerate(zip(shape, shard)) if a != b]
      assert len(split) == 1 and shard[split[0]] * 8 == shape[split[0]], name
  for name, (shape, shard) in eight_devices["data_parallel"]["shards"].items():
    assert shard == shape, name
