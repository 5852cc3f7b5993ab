"""Random batches and textbook building blocks for the coefficient tests.

Everything here is written directly from the papers with numpy loops, never
through ugrad.coefficients, so the tests compare two independent derivations.
"""

import jax
import jax.numpy as jnp
import numpy as np

import ugrad
from ugrad import coefficients


def logp_of(theta, tokens):
  """[B, T] log pi(tokens) under free logits theta [B, T, V]."""
  return jnp.take_along_axis(jax.nn.log_softmax(theta), tokens[..., None], -1)[
      ..., 0
  ]


def make_case(
    seed,
    b=6,
    t=7,
    v=5,
    group_sizes=(3, 3),
    padding="right",
    off_policy=0.4,
    empty_rows=(),
):
  """A random float64 batch with ragged completions and shuffled groups.

  Args:
    seed: numpy seed.
    b, t, v: batch, time and vocabulary sizes.
    group_sizes: sizes of the groups (sum b); ids are arbitrary integers and
      the rows are shuffled.
    padding: "right" (prompt, completion, padding) or "left" (padding,
      prompt, completion).
    off_policy: scale of the logit noise that makes logp_old != logp.
    empty_rows: rows given no completion token.

  Returns:
    (theta [B, T, V], rollout) with every Rollout field filled.
  """
  assert sum(group_sizes) == b
  rng = np.random.default_rng(seed)
  theta = rng.normal(size=(b, t, v))
  tokens = rng.integers(0, v, (b, t))
  prompt = rng.integers(1, 3, b)
  length = np.array([rng.integers(1, t - p + 1) for p in prompt])
  length[0] = t - prompt[0]
  length[list(empty_rows)] = 0
  mask = np.zeros((b, t))
  for i in range(b):
    start = prompt[i] if padding == "right" else t - length[i]
    mask[i, start : start + length[i]] = 1.0
  ids = rng.choice(np.arange(10, 99), len(group_sizes), replace=False)
  group_ids = rng.permutation(np.repeat(ids, group_sizes)).astype(np.int32)
  step_mask = (rng.random((b, t)) < 0.4) * mask
  for i in range(b):
    if length[i]:
      step_mask[i, np.nonzero(mask[i])[0][-1]] = 1.0
  pair_ids, pair_sign = _pairs(rng, b)
  tokens_j = jnp.asarray(tokens, jnp.int32)
  rollout = ugrad.Rollout(
      tokens=tokens_j,
      completion_mask=jnp.asarray(mask),
      logp_old=logp_of(
          theta + off_policy * rng.normal(size=theta.shape), tokens_j
      ),
      logp_ref=logp_of(theta + 0.4 * rng.normal(size=theta.shape), tokens_j),
      rewards=jnp.asarray(rng.normal(size=b)),
      step_rewards=jnp.asarray(rng.normal(size=(b, t)) * step_mask),
      step_mask=jnp.asarray(step_mask),
      values=jnp.asarray(0.5 * rng.normal(size=(b, t))),
      group_ids=jnp.asarray(group_ids),
      pair_ids=jnp.asarray(pair_ids),
      pair_sign=jnp.asarray(pair_sign),
      # Drawn last: the other fields keep their values.
      logp_teacher=logp_of(
          theta + 0.7 * rng.normal(size=theta.shape), tokens_j
      ),
  )
  return jnp.asarray(theta), rollout


def _pairs(rng, b):
  # An odd batch leaves one row without a partner (not used by DPO tests).
  n = (b + 1) // 2
  ids = np.repeat(rng.choice(np.arange(100, 999), n, replace=False), 2)[:b]
  signs = np.tile([1.0, -1.0], n)[:b]
  order = rng.permutation(b)
  return ids[order].astype(np.int32), signs[order]


def unified_grad(
    name, hparams, rollout, theta, normalizer=None, max_len=None, with_aux=False
):
  """Gradient w.r.t. theta of the unified loss with coefficient `name`, jitted.

  With `with_aux`, returns (grad, coef, metrics) from the same compiled step.
  """
  fn = coefficients.make_coefficient(name, **hparams)
  normalizer = normalizer or coefficients.get(name).normalizer

  def loss(th, ro):
    logp = logp_of(th, ro.tokens)
    coef, metrics = fn(ro, logp)
    loss, _ = ugrad.unified_loss(
        logp, coef, ro.completion_mask, normalizer, max_len=max_len
    )
    # Unused metrics are left out of the compiled step: they double its
    # compile time.
    return loss, ((coef, metrics) if with_aux else ())

  grad, aux = jax.jit(jax.grad(loss, has_aux=True))(theta, rollout)
  return (grad, *aux) if with_aux else grad


def jitted_coefficient(name, hparams):
  """`(rollout, theta) -> (coef, metrics)`, jitted once for reuse."""
  fn = coefficients.make_coefficient(name, **hparams)
  return jax.jit(lambda ro, th: fn(ro, logp_of(th, ro.tokens)))


def assert_same_grad(got, want):
  """Equal gradients, and a gradient large enough that the check means it."""
  assert np.abs(np.asarray(want)).max() > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# Textbook aggregations (DESIGN.md section 4), from their definitions.


def sequence_mean(per_token, mask):
  """Mean over non-empty rows of (1/|o|) sum_t."""
  lengths = np.asarray(mask).sum(-1)
  real = np.nonzero(lengths > 0)[0]
  rows = jnp.sum(per_token * mask, -1)[real] / lengths[real]
  return jnp.mean(rows)


def token_mean(per_token, mask):
  """Sum over all completion tokens / their number."""
  return jnp.sum(per_token * mask) / np.asarray(mask).sum()


def constant_mean(per_token, mask, l_max):
  """Sum over completion tokens / (non-empty rows * L_max)."""
  rows = float((np.asarray(mask).sum(-1) > 0).sum())
  return jnp.sum(per_token * mask) / (rows * l_max)


def surrogate(ratio, adv, eps_low, eps_high):
  """PPO's min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)."""
  return jnp.minimum(
      ratio * adv, jnp.clip(ratio, 1 - eps_low, 1 + eps_high) * adv
  )


def clipped_fraction(ratio, adv, mask, eps_low, eps_high):
  """Fraction of completion tokens where the clipped branch is the min."""
  ratio, adv = np.asarray(ratio), np.broadcast_to(adv, np.shape(ratio))
  clipped = ((adv > 0) & (ratio > 1 + eps_high)) | (
      (adv < 0) & (ratio < 1 - eps_low)
  )
  return (clipped * mask).sum() / mask.sum()


def group_rows(group_ids, mask):
  """Lists of row indices per group, over rows with a completion."""
  ids, mask = np.asarray(group_ids), np.asarray(mask)
  real = mask.sum(-1) > 0
  return [np.nonzero((ids == g) & real)[0] for g in np.unique(ids[real])]


def k_estimate(name, x):
  """Schulman's KL estimators of log(pi / pi_ref) = x."""
  ratio = jnp.exp(-x)  # pi_ref / pi
  return {"k1": x, "k2": 0.5 * x**2, "k3": ratio - jnp.log(ratio) - 1}[name]
