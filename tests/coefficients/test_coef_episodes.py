"""Every method on multi-turn episodes through its own coefficient.

A tiny policy samples episodes with a scripted environment (fixed answers
and turn rewards, tests/sampling/test_episodes.py); the unified gradient on
that rollout, observation tokens in it with mask 0, must equal the
textbook objective computed on the policy's tokens alone (the rollout with
the observation columns removed), and be exactly 0 on the observations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ugrad
from tests.coefficients.test_coef_group import _grpo_loss
from tests.coefficients.test_coef_ppo import _ppo_loss
from tests.coefficients.test_coef_reinforce import _loo_advantage
from tests.helpers import coef_cases as cc
from tests.sampling import test_episodes as scripted

G = 2  # samples per prompt, one group each
# About 40 s of compilation on the 2-core CPU (the sampler, then each
# method's gradient in float64).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def episode():
  """(tokens, completion mask, step rewards, step mask, real) of scripted
  episodes, as numpy."""
  out = scripted.run(scripted.make_model(), scripted.Scripted())
  assert out.step_mask.sum() > 4
  obs = (out.attention_mask > 0) & (out.completion_mask == 0)
  obs[:, :8] = False
  assert obs.sum() > 4  # observation tokens inside the episodes
  return out


def _rollout(out, seed):
  """The episode as a float64 Rollout with random rewards, old / reference
  log-probs and values, and free logits theta."""
  rng = np.random.default_rng(seed)
  b, t = out.tokens.shape
  v = scripted.TOK.vocab_size
  theta = jnp.asarray(rng.normal(size=(b, t, v)))
  tokens = jnp.asarray(out.tokens)
  rollout = ugrad.Rollout(
      tokens=tokens,
      completion_mask=jnp.asarray(out.completion_mask, jnp.float64),
      logp_old=cc.logp_of(theta + 0.4 * rng.normal(size=theta.shape), tokens),
      logp_ref=cc.logp_of(theta + 0.4 * rng.normal(size=theta.shape), tokens),
      rewards=jnp.asarray(rng.integers(0, 2, b).astype(np.float64)),
      step_rewards=jnp.asarray(out.step_rewards, jnp.float64),
      step_mask=jnp.asarray(out.step_mask, jnp.float64),
      values=jnp.asarray(0.5 * rng.normal(size=(b, t))),
      group_ids=jnp.asarray(np.arange(b) // G, jnp.int32),
      attention_mask=jnp.asarray(out.attention_mask),
  )
  return theta, rollout


def _policy_only(theta, ro):
  """The rollout and theta with only each row's policy tokens, moved to the
  front (right-padded), and the columns they came from."""
  mask = np.asarray(ro.completion_mask) > 0
  width = int(mask.sum(1).max())
  cols = [np.flatnonzero(m) for m in mask]
  index = np.stack([np.pad(c, (0, width - len(c))) for c in cols])
  keep = np.arange(width)[None, :] < mask.sum(1)[:, None]

  def take(x):
    x = np.asarray(x)
    got = np.take_along_axis(
        x, index.reshape(index.shape + (1,) * (x.ndim - 2)), 1
    )
    return jnp.asarray(got)

  compact = ro.replace(
      tokens=take(ro.tokens),
      completion_mask=jnp.asarray(keep, jnp.float64),
      logp_old=take(ro.logp_old),
      logp_ref=take(ro.logp_ref),
      step_rewards=take(ro.step_rewards) * keep,
      step_mask=take(ro.step_mask) * keep,
      values=take(ro.values),
      attention_mask=None,
  )
  return take(theta), compact, cols


def _textbook(name, theta, ro, l_max):
  """The method's objective's gradient, from the papers (see the tests of
  each coefficient)."""
  mask = np.asarray(ro.completion_mask)
  if name == "grpo":
    return jax.grad(lambda th: _grpo_loss(th, ro, cc.sequence_mean)[0])(theta)
  if name == "ppo":
    return jax.grad(lambda th: _ppo_loss(th, ro)[0])(theta)
  if name == "rloo":
    adv = _loo_advantage(ro, np.asarray(ro.rewards))[:, None]

    def rloo(th):
      ratio = jnp.exp(cc.logp_of(th, ro.tokens) - ro.logp_old)
      return -cc.constant_mean(cc.surrogate(ratio, adv, 0.2, 0.2), mask, l_max)

    return jax.grad(rloo)(theta)
  correct = (np.asarray(ro.rewards) > 0).astype(float)[:, None]  # rft
  return jax.grad(
      lambda th: cc.sequence_mean(-correct * cc.logp_of(th, ro.tokens), mask)
  )(theta)


@pytest.mark.parametrize("name", ["grpo", "ppo", "rft", "rloo"])
def test_methods_on_episodes_train_only_policy_tokens(episode, x64, name):
  theta, ro = _rollout(episode, seed=5)
  l_max = scripted.CONFIG.max_new_tokens
  got = np.asarray(cc.unified_grad(name, {}, ro, theta, max_len=l_max))
  small_theta, compact, cols = _policy_only(theta, ro)
  want = np.asarray(_textbook(name, small_theta, compact, l_max))
  assert np.abs(want).max() > 1e-3
  for b, c in enumerate(cols):
    np.testing.assert_allclose(got[b, c], want[b, : len(c)], atol=1e-12)
    off = np.setdiff1d(np.arange(got.shape[1]), c)
    np.testing.assert_array_equal(got[b, off], 0.0)


def test_ppo_turn_rewards_move_the_advantages(episode, x64):
  # The environment's turn rewards are PPO's per-token rewards at each
  # turn's last token: removing them changes the gradient.
  theta, ro = _rollout(episode, seed=6)
  with_turns = cc.unified_grad("ppo", {}, ro, theta)
  without = cc.unified_grad("ppo", {}, ro.replace(step_rewards=None), theta)
  assert np.abs(np.asarray(with_turns - without)).max() > 1e-3


def test_grpo_process_reads_turn_rewards(episode, x64):
  theta, ro = _rollout(episode, seed=7)
  got = np.asarray(cc.unified_grad("grpo_process", {}, ro, theta))
  policy = np.asarray(ro.completion_mask) > 0
  assert np.abs(got[policy]).max() > 1e-3
  np.testing.assert_array_equal(got[~policy], 0.0)
