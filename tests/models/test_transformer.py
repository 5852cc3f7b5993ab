"""The NNX decoder against Hugging Face, padding, log-probs and heads."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ugrad.models import attention as attn
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

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
      rope_theta=5000.0,
  )
  base.update(overrides)
  return model_config.ModelConfig(**base)


def _tokens(b, t, seed=0):
  return jnp.asarray(
      np.random.default_rng(seed).integers(0, V, (b, t)), jnp.int32
  )


def _left_pad_mask(lengths, t):
  return jnp.asarray(
      np.arange(t)[None, :] >= t - np.asarray(lengths)[:, None], jnp.int32
  )


# ------------------------------------------------------------ structure


def test_fixed_attribute_names_and_shapes():
  cfg = _config(tie_embeddings=False)
  m = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  _, params = nnx.split(m, nnx.Param)
  shapes = {
      ".".join(map(str, path)): v.shape for path, v in nnx.to_flat_state(params)
  }
  d, dh = 32, 8
  expected = {
      "embed_tokens.embedding": (V, d),
      "layers.1.input_layernorm.scale": (d,),
      "layers.1.self_attn.q_proj.kernel": (d, 4 * dh),
      "layers.1.self_attn.q_proj.bias": (4 * dh,),
      "layers.1.self_attn.k_proj.kernel": (d, 2 * dh),
      "layers.1.self_attn.v_proj.bias": (2 * dh,),
      "layers.1.self_attn.o_proj.kernel": (4 * dh, d),
      "layers.1.post_attention_layernorm.scale": (d,),
      "layers.1.mlp.gate_proj.kernel": (d, 48),
      "layers.1.mlp.up_proj.kernel": (d, 48),
      "layers.1.mlp.down_proj.kernel": (48, d),
      "norm.scale": (d,),
      "lm_head.kernel": (d, V),
  }
  for name, shape in expected.items():
    assert shapes[name] == shape, name
  assert "layers.0.self_attn.o_proj.bias" not in shapes
  tied = tr.Transformer(_config(qkv_bias=False), rngs=nnx.Rngs(0))
  tied_names = {
      ".".join(map(str, p))
      for p, _ in nnx.to_flat_state(nnx.state(tied, nnx.Param))
  }
  assert not any("lm_head" in n or "bias" in n for n in tied_names)


def test_every_param_has_logical_axes():
  m = tr.Transformer(_config(tie_embeddings=False), rngs=nnx.Rngs(0))
  allowed = {"embed", "heads", "kv_heads", "mlp", "vocab", None}
  for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
    names = var.get_metadata()["logical_axes"]
    assert len(names) == var.get_value().ndim, path
    assert set(names) <= allowed, path
    assert "embed" in names or path[-1] == "bias", path


# ------------------------------------------------------- Hugging Face parity


def _to_torch(model, cfg):
  """A transformers model holding `model`'s weights (Linear is [out, in])."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kind = "Qwen2" if cfg.qkv_bias else "Llama"
  hf_cfg = getattr(transformers, f"{kind}Config")(
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads,
      intermediate_size=cfg.mlp_size,
      rms_norm_eps=cfg.rms_eps,
      tie_word_embeddings=cfg.tie_embeddings,
      rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
      attention_bias=cfg.qkv_bias,
  )
  hf = getattr(transformers, f"{kind}ForCausalLM")(hf_cfg).eval()
  state = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = ".".join(map(str, path))
    value = np.asarray(var.get_value())
    if name.endswith(".kernel"):
      name, value = name[: -len("kernel")] + "weight", value.T
    name = name.replace("embedding", "weight").replace("scale", "weight")
    state[name if name.startswith("lm_head") else "model." + name] = (
        torch.tensor(np.ascontiguousarray(value))
    )
  if cfg.tie_embeddings:
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
  hf.load_state_dict(state, strict=True)
  assert hf.config.rope_parameters["rope_theta"] == cfg.rope_theta
  return hf, torch


@pytest.mark.parametrize(
    "overrides",
    [
        dict(qkv_bias=True, tie_embeddings=False),
        dict(qkv_bias=False, tie_embeddings=True, num_kv_heads=4),
    ],
)
def test_matches_transformers_with_left_padding(overrides):
  cfg = _config(**overrides)
  model = tr.Transformer(cfg, rngs=nnx.Rngs(1))
  # Weights far from init, so a wrong convention cannot hide in small values.
  params = nnx.state(model, nnx.Param)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  leaves = [
      x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)
  ]
  nnx.update(model, jax.tree.unflatten(tree, leaves))
  hf, torch = _to_torch(model, cfg)
  tokens = _tokens(3, 11)
  mask = _left_pad_mask([11, 7, 2], 11)
  positions = tr.positions_from_mask(mask)
  with torch.no_grad():
    ref = hf(
        input_ids=torch.tensor(np.asarray(tokens)).long(),
        attention_mask=torch.tensor(np.asarray(mask)).long(),
        position_ids=torch.tensor(np.asarray(positions)).long(),
    ).logits
  got = np.asarray(model(tokens, mask))
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(got[real], ref.numpy()[real], atol=2e-4, rtol=2e-4)


# ------------------------------------------------------------ attention


def _attention_inputs(b=3, t=5, s=7, h=4, hkv=2, dh=8, seed=0):
  """q [B, T, H, Dh], k and v [B, S, Hkv, Dh], and a causal, left-padded
  mask [B, T, S] in which every query row of batch row 2 sees nothing."""
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (b, t, h, dh))
  k = jax.random.normal(keys[1], (b, s, hkv, dh))
  v = jax.random.normal(keys[2], (b, s, hkv, dh))
  causal = np.arange(s)[None, :] <= s - t + np.arange(t)[:, None]
  real = np.arange(s)[None, :] >= np.array([0, 3, s])[:, None]
  return q, k, v, jnp.asarray(causal[None] & real[:, None, :])


def _outputs_and_grads(attend, q, k, v, mask, cotangent):
  """attend(q, k, v, mask) jitted, and the gradients of its sum against
  `cotangent` for q, k and v, as float32 numpy; full float32 matmuls on a
  GPU too (its default is TF32)."""

  def loss(q, k, v):
    return jnp.sum((attend(q, k, v, mask) * cotangent).astype(jnp.float32))

  with jax.default_matmul_precision("float32"):
    out = jax.jit(attend)(q, k, v, mask)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  return np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads]


def _where_seen(mask, x):
  """x on the query rows that see a key, 0 on the others (a padding
  position's, which no loss reads)."""
  return jnp.where(np.asarray(mask).any(-1)[..., None, None], x, 0)


@pytest.mark.parametrize("layout", tr.CACHE_LAYOUTS)
def test_xla_attention_kernel_equals_the_einsums(layout):
  """`attention="xla"` (jax.nn.dot_product_attention) gives the outputs and
  gradients of the einsum implementation, fully masked rows included."""
  q, k, v, mask = _attention_inputs()
  if layout == "bhsd":
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  cotangent = jax.random.normal(jax.random.key(1), q.shape)

  out, grads = _outputs_and_grads(
      lambda *a: attn.attend_with(*a, layout, "xla"), q, k, v, mask, cotangent
  )
  want, want_grads = _outputs_and_grads(
      lambda *a: attn.attend(*a, layout), q, k, v, mask, cotangent
  )
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  # A row that sees nothing averages the values uniformly, as before.
  np.testing.assert_allclose(out[2], want[2], rtol=1e-5, atol=1e-5)
  for got, expected in zip(grads, want_grads):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    jax.default_backend() != "gpu",
    reason="cuDNN flash attention needs an NVIDIA GPU "
    "(run with JAX_PLATFORMS=cuda there)",
)
@pytest.mark.parametrize("layout", tr.CACHE_LAYOUTS)
def test_cudnn_attention_kernel_equals_the_einsums_on_gpu(layout):
  """`attention="cudnn"` in bfloat16 gives the einsums' outputs and
  gradients to bfloat16 precision on every row that sees a key, and finite
  values everywhere, at a model's head size (64) and a length past one
  cuDNN tile."""
  q, k, v, mask = _attention_inputs(b=3, t=160, s=192, h=8, hkv=2, dh=64)
  q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
  if layout == "bhsd":
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  # As in training, no loss reads a row that sees no key: those rows
  # differ by design, in outputs and gradients.
  cotangent = _where_seen(
      mask, jax.random.normal(jax.random.key(1), q.shape)
  ).astype(jnp.bfloat16)

  out, grads = _outputs_and_grads(
      lambda *a: attn.attend_with(*a, layout, "cudnn"), q, k, v, mask, cotangent
  )
  want, want_grads = _outputs_and_grads(
      lambda *a: attn.attend(*a, layout), q, k, v, mask, cotangent
  )
  assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)
  sees = np.asarray(mask).any(-1)
  np.testing.assert_allclose(out[sees], want[sees], rtol=2e-2, atol=2e-2)
  for got, expected in zip(grads, want_grads):
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(got / scale, expected / scale, atol=2e-2)


@pytest.mark.parametrize("t,s", [(5, 7), (6, 8), (1, 8)])
def test_cudnn_wrapper_pads_odd_lengths_and_unmasks_empty_rows(t, s):
  """What `_attend_cudnn` does around cuDNN's kernel (odd lengths padded,
  a row that sees no key given every key), run here with XLA's kernel:
  every row that sees a key keeps the einsums' output and gradients, and no
  gradient is NaN."""
  q, k, v, mask = _attention_inputs(t=t, s=s)
  cotangent = _where_seen(mask, jax.random.normal(jax.random.key(1), q.shape))

  out, grads = _outputs_and_grads(
      lambda *a: attn._attend_cudnn(*a, implementation="xla"),
      q,
      k,
      v,
      mask,
      cotangent,
  )
  want, want_grads = _outputs_and_grads(
      lambda *a: attn.attend(*a, "bshd"), q, k, v, mask, cotangent
  )
  assert out.shape == want.shape
  sees = np.asarray(mask).any(-1)
  np.testing.assert_allclose(out[sees], want[sees], rtol=1e-5, atol=1e-5)
  for got, expected in zip(grads, want_grads):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_attention_switch_reaches_training_and_prefill(monkeypatch):
  """The model's uncached and prefill attention go through the configured
  kernel; "auto" is the einsums off GPU."""
  seen = []
  kernel = attn.attend_with
  monkeypatch.setattr(
      attn,
      "attend_with",
      lambda *a: seen.append(attn.attention_kernel(a[-1], a[0].dtype))
      or kernel(*a),
  )
  cfg = _config(attention="xla")
  model = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  tokens = _tokens(2, 6)
  model(tokens)
  cache = tr.init_cache(cfg, 2, 8)
  model.hidden_cached(
      tokens,
      jnp.broadcast_to(jnp.arange(6), (2, 6)),
      jnp.ones((2, 8), jnp.int32),
      cache,
      0,
  )
  assert seen == ["xla"] * (2 * cfg.num_layers)
  if jax.default_backend() != "gpu":
    assert attn.attention_kernel("auto", jnp.bfloat16) == "einsum"


# ------------------------------------------------------------ padding


@pytest.mark.slow
def test_left_padding_matches_unpadded_and_never_nans():
  model = tr.Transformer(_config(), rngs=nnx.Rngs(0))
  tokens = _tokens(3, 9)
  mask = _left_pad_mask([9, 5, 0], 9)  # Row 2 is all padding.
  logits = jax.jit(lambda t, m: model(t, m))(tokens, mask)
  assert np.all(np.isfinite(np.asarray(logits)))
  alone = model(tokens[1:2, 4:])
  np.testing.assert_allclose(logits[1, 4:], alone[0], atol=1e-5)
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.jit(
      jax.grad(
          lambda p: logprobs.token_logprobs(
              nnx.merge(graphdef, p), tokens, mask
          ).sum()
      )
  )(params)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_no_mask_means_all_real():
  model = tr.Transformer(_config(), rngs=nnx.Rngs(0))
  tokens = _tokens(2, 6)
  np.testing.assert_allclose(
      model(tokens), model(tokens, jnp.ones((2, 6))), atol=1e-6
  )


def test_bfloat16_compute_is_close_to_float32():
  cfg = _config()
  m32 = tr.Transformer(cfg, rngs=nnx.Rngs(0))
  m16 = tr.Transformer(
      dataclasses.replace(cfg, dtype="bfloat16"), rngs=nnx.Rngs(0)
  )
  tokens = _tokens(2, 8)
  out = m16(tokens)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(
      np.asarray(out, np.float32), m32(tokens), atol=0.05
  )


# ------------------------------------------------------------ scalar head


def test_scalar_model_scores_every_prefix():
  cfg = _config()
  model = tr.ScalarModel(cfg, rngs=nnx.Rngs(0))
  tokens = _tokens(3, 7)
  mask = jnp.asarray(
      [
          [0, 0, 1, 1, 1, 0, 0],  # Padded on both sides.
          [1, 1, 1, 1, 1, 1, 1],
          [0, 0, 0, 0, 0, 0, 0],
      ],
      jnp.int32,
  )
  np.testing.assert_array_equal(model(tokens, mask), 0.0)  # Zero-init head.
  model.score_head.kernel.set_value(
      jax.random.normal(jax.random.key(1), (32, 1))
  )
  graphdef, params = nnx.split(model, nnx.Param)
  scores = jax.jit(lambda p: nnx.merge(graphdef, p)(tokens, mask))(params)
  assert scores.shape == (3, 7) and scores.dtype == jnp.float32
  h = model.hidden(tokens, mask)
  np.testing.assert_allclose(
      scores, (h @ model.score_head.kernel[...])[..., 0], atol=1e-5
  )
