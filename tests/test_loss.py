"""Tests of the unified loss and its normalisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ugrad


def _batch(key, b=4, t=6):
  k1, k2, k3 = jax.random.split(key, 3)
  logits = jax.random.normal(k1, (b, t, 5), jnp.float64)
  tokens = jax.random.randint(k2, (b, t), 0, 5)
  coef = jax.random.normal(k3, (b, t), jnp.float64)
  lengths = np.array([3, 1, 0, 5])[:b]
  mask = (np.arange(t)[None, :] >= t - lengths[:, None]).astype(np.float64)
  return logits, tokens, coef, jnp.asarray(mask)


def _logp(logits, tokens):
  return jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[
      ..., 0
  ]


@pytest.mark.parametrize("normalizer", ["sequence", "token", "constant"])
def test_gradient_is_coefficient_weighted_score(x64, normalizer):
  logits, tokens, coef, mask = _batch(jax.random.key(0))

  def loss_fn(theta):
    loss, _ = ugrad.unified_loss(
        _logp(theta, tokens), coef * theta.sum(-1), mask, normalizer, max_len=8
    )
    return loss

  # The coefficient depends on theta, but only through a stop-gradient.
  got = jax.jit(jax.grad(loss_fn))(logits)
  c = coef * logits.sum(-1)
  lengths = mask.sum(-1)
  rows = float((lengths > 0).sum())
  if normalizer == "sequence":
    w = mask / np.maximum(lengths, 1)[:, None] / rows
  elif normalizer == "token":
    w = mask / mask.sum()
  else:
    w = mask / (rows * 8)
  want = jax.grad(lambda th: -jnp.sum(w * c * _logp(th, tokens)))(logits)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_empty_rows_contribute_nothing_and_no_nan(x64):
  logits, tokens, coef, mask = _batch(jax.random.key(1))
  logp = _logp(logits, tokens)
  full, aux = ugrad.unified_loss(logp, coef, mask)
  # Row 2 has no completion token; dropping it changes nothing.
  keep = np.array([0, 1, 3])
  sub, _ = ugrad.unified_loss(logp[keep], coef[keep], mask[keep])
  np.testing.assert_allclose(full, sub, rtol=1e-12)
  assert float(aux["denominator"]) == 3
  empty, _ = ugrad.unified_loss(logp, coef, jnp.zeros_like(mask), "token")
  grad = jax.grad(
      lambda lp: ugrad.unified_loss(lp, coef, jnp.zeros_like(mask))[0]
  )(logp)
  assert float(empty) == 0.0 and np.all(np.isfinite(grad))


def test_aux_accumulates_to_global_normaliser(x64):
  logits, tokens, coef, mask = _batch(jax.random.key(2))
  logp = _logp(logits, tokens)
  for normalizer in ("sequence", "token", "constant"):
    whole, _ = ugrad.unified_loss(logp, coef, mask, normalizer, max_len=6)
    parts = [
        ugrad.unified_loss(logp[s], coef[s], mask[s], normalizer, max_len=6)[1]
        for s in (slice(0, 2), slice(2, 4))
    ]
    num = sum(p["numerator"] for p in parts)
    den = sum(p["denominator"] for p in parts)
    np.testing.assert_allclose(whole, num / den, rtol=1e-12)


def test_bad_normalizer_lists_valid_ones():
  x = jnp.zeros((1, 2))
  with pytest.raises(ValueError, match="sequence, token, constant"):
    ugrad.unified_loss(x, x, x, "tokens")
  with pytest.raises(ValueError, match="max_len"):
    ugrad.unified_loss(x, x, x, "constant")
