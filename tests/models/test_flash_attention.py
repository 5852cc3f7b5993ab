"""Flash attention paths (`attention.attend_causal` over compacted rows)
against the einsums under the dense padding mask: outputs and gradients.

Splash attention runs in Pallas's interpreter on the CPU; cuDNN's kernel is
tested on a GPU only (tests/models/test_transformer.py)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad import sampling
from ugrad.models import attention as attn
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

_ROOT = pathlib.Path(__file__).resolve().parents[2]
V = 24


def _config(**overrides):
  base = dict(
      vocab_size=V,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=48,
      qkv_bias=True,
  )
  base.update(overrides)
  return model_config.ModelConfig(**base)


def _batch(t=11):
  """Rows with left padding, right padding, both, none, and a hole."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, V, (5, t)), jnp.int32)
  mask = np.ones((5, t), np.int32)
  mask[0, :4] = 0  # left padding (a prompt)
  mask[1, -3:] = 0  # right padding (after EOS)
  mask[2, :2] = 0
  mask[2, -2:] = 0  # both
  mask[4, 5:7] = 0  # a hole
  return tokens, jnp.asarray(mask)


def _logprobs_and_grads(attention, tokens, mask, **overrides):
  cfg = _config(attention=attention, **overrides)
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)

  def loss(p):
    logp = logprobs.token_logprobs(nnx.merge(graphdef, p), tokens, mask)
    return (logp * _predicted_from_real(mask)).sum(), logp

  (_, logp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logp * _predicted_from_real(mask), grads


def _predicted_from_real(mask):
  """Positions whose token is real and predicted from a real token: the
  only log-probs a loss reads (a completion token always follows a real
  token); a token after padding is predicted from a padding query."""
  return jnp.pad(mask[:, 1:] * mask[:, :-1], ((0, 0), (1, 0)))


def _max_diff(a, b):
  return max(
      float(jnp.abs(x - y).max())
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_real_first_puts_real_tokens_first_in_order():
  _, mask = _batch()
  order = np.asarray(attn.real_first(mask))
  for row, perm in zip(np.asarray(mask), order):
    n = int(row.sum())
    assert list(perm[:n]) == list(np.flatnonzero(row))
    assert sorted(perm) == list(range(len(row)))


@pytest.mark.parametrize("remat", ["none", "full"])
def test_splash_equals_the_einsums_under_the_padding_mask(remat):
  """Splash (interpreted) over compacted rows gives the einsum path's
  log-probs at every real position, and the same gradients."""
  tokens, mask = _batch()
  ref, ref_grads = _logprobs_and_grads("einsum", tokens, mask, remat=remat)
  out, grads = _logprobs_and_grads("splash", tokens, mask, remat=remat)
  assert _max_diff(out, ref) < 2e-5
  assert _max_diff(grads, ref_grads) < 2e-5
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_causal_reference_kernels_agree_with_splash_on_long_rows():
  """`attend_causal` with every kernel that runs on a CPU, at a length over
  one splash block (so the kernel's block skipping is exercised), grouped
  heads, in float32: outputs and gradients."""
  b, t, h, hkv, dh = 2, 600, 4, 2, 16
  keys = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(keys[0], (b, t, h, dh))
  k = jax.random.normal(keys[1], (b, t, hkv, dh))
  v = jax.random.normal(keys[2], (b, t, hkv, dh))
  cot = jax.random.normal(keys[3], (b, t, h, dh))

  def run(kernel):
    f = lambda q, k, v: (attn.attend_causal(q, k, v, kernel) * cot).sum()
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(q, k, v)

  ref = run("einsum")
  for kernel in ("splash", "xla"):
    out = run(kernel)
    assert abs(float(out[0] - ref[0])) < 1e-3 * abs(float(ref[0])), kernel
    assert _max_diff(out[1], ref[1]) < 1e-4, kernel


def test_scalar_model_with_splash_scores_real_positions_as_the_einsums():
  tokens, mask = _batch()
  scores = {}
  for attention in ("einsum", "splash"):
    model = tr.ScalarModel(_config(attention=attention), rngs=nnx.Rngs(0))
    # A nonzero head, so that the scores depend on the hidden states.
    model.score_head.kernel[...] = jnp.linspace(-1, 1, 32)[:, None]
    scores[attention] = model(tokens, mask) * mask
  assert _max_diff(scores["splash"], scores["einsum"]) < 2e-5


def test_sampling_with_splash_prefill_equals_the_einsums():
  """The sampler's prefill through splash (compacted prompt rows) samples the
  einsum path's tokens with its log-probs, from left-padded prompts."""
  rng = np.random.default_rng(3)
  lengths = np.array([3, 9, 6])
  mask = jnp.asarray(np.arange(9)[None] >= 9 - lengths[:, None], jnp.int32)
  tokens = jnp.asarray(rng.integers(1, V, (3, 9)), jnp.int32) * mask
  config = sampling.SamplingConfig(
      max_new_tokens=6, eos_id=0, num_samples=2, temperature=1.0
  )
  out = {}
  for attention in ("einsum", "splash"):
    graphdef, params = nnx.split(
        tr.Transformer(_config(attention=attention), rngs=nnx.Rngs(0)),
        nnx.Param,
    )
    out[attention] = sampling.sample(
        graphdef, params, tokens, mask, jax.random.key(0), config
    )
  np.testing.assert_array_equal(out["splash"].tokens, out["einsum"].tokens)
  np.testing.assert_allclose(out["splash"].logp, out["einsum"].logp, atol=2e-5)


@pytest.mark.slow
def test_splash_compiled_for_a_tpu_is_the_mosaic_kernel_not_the_interpreter():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: pip install -e '.[plan]'",
  )
  # A local import: experiments is not part of the package.
  from experiments import plan_compile  # pylint: disable=import-outside-toplevel

  device = plan_compile.topology_devices("v5e-8")[0]
  q = jax.ShapeDtypeStruct(
      (2, 256, 4, 64),
      jnp.bfloat16,
      sharding=jax.sharding.SingleDeviceSharding(device),
  )
  loss = lambda q, k, v: attn._attend_splash(q, k, v).sum()
  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  hlo = plan_compile.compile_for_tpu(grad, q, q, q).as_text()
  # Forward, dq and dkv kernels; the interpreter would be while loops.
  assert hlo.count("tpu_custom_call") == 3 and " while(" not in hlo


def test_auto_picks_splash_on_tpu_and_cudnn_on_gpu_in_16_bit():
  kernel = attn.attention_kernel
  assert kernel("auto", jnp.float32, "tpu") == "splash"
  assert kernel("auto", jnp.bfloat16, "tpu") == "splash"
  assert kernel("auto", jnp.bfloat16, "gpu") == "cudnn"
  assert kernel("auto", jnp.float32, "gpu") == "einsum"
  assert kernel("auto", jnp.bfloat16, "cpu") == "einsum"
  assert kernel("xla", jnp.bfloat16, "tpu") == "xla"


_MESH_SCRIPT = textwrap.dedent("""
    import json
    from flax import nnx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ugrad.models import logprobs, model_config, sharding
    from ugrad.models import transformer as tr

    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 20, (8, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] >= rng.integers(0, 6, (8, 1)),
                       jnp.int32)

    real = jnp.pad(mask[:, 1:] * mask[:, :-1], ((0, 0), (1, 0)))

    def run(attention, mesh=None):
      cfg = model_config.ModelConfig(vocab_size=20, hidden_size=64,
                                     num_layers=1, num_heads=4,
                                     num_kv_heads=2, mlp_size=96,
                                     attention=attention)
      graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)),
                                   nnx.Param)
      def loss(p):
        logp = logprobs.token_logprobs(nnx.merge(graphdef, p), tokens, mask)
        return (logp * real).sum(), logp * real
      fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
      if mesh is None:
        return fn(params)
      shardings = sharding.param_shardings(params, mesh, sharding.RULES)
      with jax.set_mesh(mesh):
        text = fn.lower(jax.device_put(params, shardings)).as_text()
        return fn(jax.device_put(params, shardings)), text

    (_, ref), ref_grads = run("einsum")
    out = {}
    for name, requested in {"data8": {"data": 8},
                            "2x2x2": {"data": 2, "fsdp": 2, "tensor": 2},
                            "fsdp4_tensor2": {"fsdp": 4, "tensor": 2}}.items():
      mesh = sharding.make_mesh(sharding.mesh_shape(requested))
      ((_, logp), grads), text = run("splash", mesh)
      out[name] = {
          "logp": float(jnp.abs(logp - ref).max()),
          "grads": max(float(jnp.abs(a - b).max()) for a, b in
                       zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads))),
          "shard_map": "shard_map" in text or "sdy.manual_computation" in text,
      }
    print("RESULT", json.dumps(out))
""")


@pytest.mark.slow
def test_splash_on_meshes_equals_one_device_einsums():
  """On 8 fake devices, splash runs on each device's rows and heads (a
  shard_map) and gives the one-device einsums' log-probs and gradients."""
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=8",
      PYTHONPATH=str(_ROOT),
  )
  proc = subprocess.run(
      [sys.executable, "-c", _MESH_SCRIPT],
      env=env,
      cwd=_ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  for name, result in json.loads(line[len("RESULT ") :]).items():
    assert result["shard_map"], name
    assert result["logp"] < 2e-5, (name, result)
    assert result["grads"] < 2e-5, (name, result)
