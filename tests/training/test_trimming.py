"""Trimmed padding: the same loss and gradients on fewer columns."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ugrad
from ugrad import coefficients
from ugrad.models import model_config
from ugrad.models import transformer as tr
from ugrad.sampling import layout
from ugrad.training import trimming
from ugrad.training import update as update_lib

V, P, N = 24, 12, 20


def _rollout(seed, prompt_lens, completion_lens, p=P, n=N):
  """A [B, P + N] rollout of random ids in the fixed layout."""
  rng = np.random.default_rng(seed)
  ids = lambda k: rng.integers(1, V, k).tolist()
  packed = layout.pack(
      [ids(k) for k in prompt_lens], [ids(k) for k in completion_lens], p, n, 0
  )
  b = len(prompt_lens)
  return ugrad.Rollout(
      tokens=packed["tokens"],
      attention_mask=packed["attention_mask"],
      completion_mask=packed["completion_mask"],
      rewards=rng.normal(size=b).astype(np.float32),
      group_ids=np.repeat(np.arange(b // 2), 2).astype(np.int32),
  )


def _columns_with_real_tokens(rollout):
  return np.flatnonzero(np.asarray(rollout.attention_mask).any(0))


@pytest.mark.parametrize("bucket", [1, 3, 4, 16, 64])
def test_trim_never_cuts_a_real_token_and_rounds_to_the_bucket(bucket):
  rng = np.random.default_rng(bucket)
  widths = set()
  for seed in range(40):
    b = 6
    rollout = _rollout(
        seed, rng.integers(0, P + 1, b), rng.integers(0, N + 1, b)
    )
    trimmed = trimming.trim(rollout, bucket)
    start, end = trimming.span(rollout.attention_mask, bucket)
    width = end - start
    widths.add(width)
    assert width == P + N or width % bucket == 0
    for name in ("tokens", "attention_mask", "completion_mask"):
      full, cut = np.asarray(getattr(rollout, name)), getattr(trimmed, name)
      np.testing.assert_array_equal(cut, full[:, start:end])
    # Every real token kept, the [B] fields as they were.
    assert (
        np.asarray(trimmed.attention_mask).sum()
        == np.asarray(rollout.attention_mask).sum()
    )
    np.testing.assert_array_equal(trimmed.rewards, rollout.rewards)
    np.testing.assert_array_equal(trimmed.group_ids, rollout.group_ids)
    # Idempotent, and only all-padding columns dropped.
    again = trimming.trim(trimmed, bucket)
    assert again.tokens.shape == trimmed.tokens.shape
    cols = _columns_with_real_tokens(rollout)
    if cols.size:
      assert start <= cols[0] and cols[-1] < end
  # A bounded number of widths: multiples of the bucket, or the full one.
  assert len(widths) <= -(-(P + N) // bucket)


def test_trim_edge_cases():
  empty = _rollout(0, [0, 0], [0, 0])
  assert trimming.trim(empty, 8).tokens.shape == (2, 8)
  full = _rollout(0, [P, 1], [N, 1])
  assert trimming.trim(full, 8).tokens.shape == (2, P + N)
  assert trimming.trim(full, 0) is full
  no_mask = full.replace(attention_mask=None)
  assert trimming.trim(no_mask, 8) is no_mask
  # Near the right end the extra columns come from the left.
  late = _rollout(0, [0, 0], [N, 3])
  start, end = trimming.span(late.attention_mask, 16)
  assert (start, end) == (P + N - 32, P + N) and start <= P


def _model(seed):
  cfg = model_config.ModelConfig(
      vocab_size=V,
      hidden_size=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      mlp_size=48,
      qkv_bias=True,
      rope_theta=5000.0,
  )
  return nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(seed)), nnx.Param)


def _prepared(rollout, graphdef, old, ref):
  """The rollout with logp_old and logp_ref, as `prepare` adds them."""
  logprobs = lambda p: update_lib.policy_logprobs(
      graphdef, p, jnp.asarray(rollout.tokens), rollout.attention_mask
  )
  return rollout.replace(logp_old=logprobs(old), logp_ref=logprobs(ref))


@pytest.mark.parametrize(
    "coef, normalizer, prompts, width",
    [
        # Padding on both sides: no prompt uses its first 3 columns, no
        # completion its last 6; a row with no completion.
        ("grpo", "sequence", [9, 4, 2, 6, 1, 5], 24),
        ("dr_grpo", "constant", [9, 4, 2, 6, 1, 5], 24),
        ("gspo", "token", [9, 4, 2, 6, 1, 5], 24),
    ],
)
def test_trimmed_loss_and_gradients_equal_the_full_width(
    coef, normalizer, prompts, width
):
  graphdef, params = _model(0)
  # Old and reference policies near the trained one, not equal to it: a
  # KL term at rounding-noise level would flip the signs gc_*_frac count.
  old, ref = (
      jax.tree.map(lambda a, b: a + 0.05 * (b - a), params, _model(seed)[1])
      for seed in (1, 2)
  )
  rollout = _rollout(7, prompts, [14, 3, 0, 9, 11, 1])
  trimmed = trimming.trim(rollout, 4)
  assert trimmed.tokens.shape == (6, width)
  # The passes of `prepare` on the trimmed columns: equal on every trained
  # token.
  full = _prepared(rollout, graphdef, old, ref)
  cut = _prepared(trimmed, graphdef, old, ref)
  start, end = trimming.span(rollout.attention_mask, 4)
  assert (start, end) == (3, 27)
  real = np.asarray(trimmed.completion_mask) > 0
  for name in ("logp_old", "logp_ref"):
    np.testing.assert_allclose(
        np.asarray(getattr(cut, name))[real],
        np.asarray(getattr(full, name))[:, start:end][real],
        atol=1e-6,
    )
  loss = update_lib.policy_loss(
      graphdef, coefficients.make_coefficient(coef), normalizer, N
  )
  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (num_f, (den_f, metrics_f)), grads_f = grad_fn(params, full)
  (num_c, (den_c, metrics_c)), grads_c = grad_fn(params, cut)
  assert float(den_f) == float(den_c)
  # Sums over another width: 1.4e-6 apart (relative) on a 2-core AMD EPYC.
  np.testing.assert_allclose(num_c, num_f, rtol=5e-6, atol=1e-7)
  for g_c, g_f in zip(jax.tree.leaves(grads_c), jax.tree.leaves(grads_f)):
    np.testing.assert_allclose(g_c, g_f, rtol=1e-5, atol=1e-6)
  for key in metrics_f:
    np.testing.assert_allclose(
        metrics_c[key], metrics_f[key], atol=1e-6, err_msg=key
    )
