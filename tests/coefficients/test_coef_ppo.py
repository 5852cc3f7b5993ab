"""PPO: the unified gradient equals the clipped surrogate's with GAE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc

SHAPES = [
    dict(b=6, t=7, v=5, group_sizes=(6,), padding="right"),
    dict(b=5, t=9, v=4, group_sizes=(5,), padding="left"),
]


def _gae_loop(rewards, values, mask, gamma, lam):
  """Schulman et al.'s GAE, one row at a time over its completion tokens."""
  adv = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    running, next_value = 0.0, 0.0
    for t in reversed(np.nonzero(mask[b])[0]):
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      running = delta + gamma * lam * running
      adv[b, t] = running
      next_value = values[b, t]
  return adv


def _whiten(x, mask):
  on = x[mask > 0]
  return (x - on.mean()) / np.sqrt(max(on.var(), 1e-8)) * mask


def _ppo_loss(
    theta,
    ro,
    clip_eps=0.2,
    clip_eps_high=None,
    gamma=1.0,
    lam=0.95,
    beta=0.0,
    kl_estimator="k1",
    kl_in="reward",
    whiten_advantages=False,
):
  """-(1/B) sum_i 1/|o_i| sum_t [min(rho A, clip(rho) A) - KL in the loss]."""
  mask = np.asarray(ro.completion_mask)
  logp_old, logp_ref = np.asarray(ro.logp_old), np.asarray(ro.logp_ref)
  rewards = np.zeros_like(mask)
  for b in range(mask.shape[0]):
    rewards[b, np.nonzero(mask[b])[0][-1]] = float(ro.rewards[b])
  if ro.step_rewards is not None:  # process / turn rewards at step ends
    rewards += np.asarray(ro.step_rewards) * np.asarray(ro.step_mask)
  if beta and kl_in == "reward":
    rewards -= (
        beta
        * np.asarray(cc.k_estimate(kl_estimator, logp_old - logp_ref))
        * mask
    )
  adv = _gae_loop(rewards, np.asarray(ro.values), mask, gamma, lam)
  if whiten_advantages:
    adv = _whiten(adv, mask)
  logp = cc.logp_of(theta, ro.tokens)
  ratio = jnp.exp(logp - logp_old)
  high = clip_eps if clip_eps_high is None else clip_eps_high
  objective = cc.surrogate(ratio, adv, clip_eps, high)
  if beta and kl_in == "loss":
    objective -= beta * cc.k_estimate(kl_estimator, logp - logp_ref)
  return -cc.sequence_mean(objective, mask), (ratio, adv)


@pytest.mark.parametrize(
    "shape,hparams",
    [
        (SHAPES[0], dict()),
        (SHAPES[1], dict()),
        (SHAPES[1], dict(beta=0.1)),
        (
            SHAPES[0],
            dict(beta=0.1, kl_estimator="k3", kl_in="loss", gamma=0.9, lam=0.8),
        ),
        (
            SHAPES[1],
            dict(
                whiten_advantages=True,
                clip_eps_high=0.28,
                beta=0.05,
                kl_estimator="k2",
            ),
        ),
    ],
)
def test_ppo_matches_clipped_surrogate(x64, shape, hparams):
  theta, ro = cc.make_case(10, **shape)
  want, (ratio, adv) = jax.grad(_ppo_loss, has_aux=True)(theta, ro, **hparams)
  mask = np.asarray(ro.completion_mask)
  high = hparams.get("clip_eps_high", 0.2)
  clipped = cc.clipped_fraction(ratio, adv, mask, 0.2, high)
  assert 0 < clipped < 0.9  # Off-policy: the clip is active on some tokens.
  got, _, metrics = cc.unified_grad("ppo", hparams, ro, theta, with_aux=True)
  cc.assert_same_grad(got, want)
  np.testing.assert_allclose(metrics["clip_frac"], clipped, rtol=1e-12)


def test_ppo_on_policy_is_the_policy_gradient(x64):
  # With logp_old = logp there is no clipping: GC = A_t exactly.
  theta, ro = cc.make_case(11, b=4, t=6, v=5, group_sizes=(4,))
  ro = ro.replace(logp_old=cc.logp_of(theta, ro.tokens))
  want, _ = jax.grad(_ppo_loss, has_aux=True)(theta, ro, lam=1.0)
  cc.assert_same_grad(cc.unified_grad("ppo", dict(lam=1.0), ro, theta), want)
