"""RLOO and REINFORCE++: unified gradients equal the papers' objectives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc

SHAPES = [
    dict(b=6, t=7, v=5, group_sizes=(3, 3), padding="right"),
    dict(b=8, t=9, v=4, group_sizes=(2, 4, 2), padding="left"),
]


def _loo_advantage(ro, rewards):
  """Kool et al.'s leave-one-out baseline: r_i - mean of the others."""
  adv = np.zeros_like(rewards)
  for rows in cc.group_rows(ro.group_ids, ro.completion_mask):
    for i in rows:
      adv[i] = rewards[i] - np.mean([rewards[j] for j in rows if j != i])
  return adv


def _sequence_kl(ro, logp_sampler):
  x = np.asarray(logp_sampler) - np.asarray(ro.logp_ref)
  return (x * np.asarray(ro.completion_mask)).sum(-1)


@pytest.mark.parametrize("shape", SHAPES)
def test_rloo_on_policy_is_reinforce_with_loo_baseline(x64, shape):
  theta, ro = cc.make_case(30, **shape)
  ro = ro.replace(logp_old=None)  # Sampled by the current policy.
  l_max, beta = shape["t"], 0.1
  mask = np.asarray(ro.completion_mask)
  sampler = cc.logp_of(theta, ro.tokens)
  adv = _loo_advantage(
      ro, np.asarray(ro.rewards) - beta * _sequence_kl(ro, sampler)
  )

  # REINFORCE: sum_i A_i sum_t logp, token sums over B * L_max.
  def loss(th):
    logp = cc.logp_of(th, ro.tokens)
    return -cc.constant_mean(adv[:, None] * logp, mask, l_max)

  got = cc.unified_grad("rloo", dict(beta=beta), ro, theta, max_len=l_max)
  cc.assert_same_grad(got, jax.grad(loss)(theta))


@pytest.mark.parametrize("shape", SHAPES)
def test_rloo_off_policy_is_clipped(x64, shape):
  theta, ro = cc.make_case(31, **shape)
  l_max, beta = shape["t"], 0.05
  mask = np.asarray(ro.completion_mask)
  adv = _loo_advantage(
      ro, np.asarray(ro.rewards) - beta * _sequence_kl(ro, ro.logp_old)
  )[:, None]

  def loss(th):
    ratio = jnp.exp(cc.logp_of(th, ro.tokens) - ro.logp_old)
    return (
        -cc.constant_mean(cc.surrogate(ratio, adv, 0.2, 0.2), mask, l_max),
        ratio,
    )

  want, ratio = jax.grad(loss, has_aux=True)(theta)
  assert 0 < cc.clipped_fraction(ratio, adv, mask, 0.2, 0.2)
  got = cc.unified_grad("rloo", dict(beta=beta), ro, theta, max_len=l_max)
  cc.assert_same_grad(got, want)


def _reinforce_pp_advantage(ro, beta, baseline):
  """Hu 2025: A_t = r - beta * sum_{s >= t} k1_s, then global whitening."""
  mask = np.asarray(ro.completion_mask)
  rewards = np.asarray(ro.rewards).copy()
  if baseline:
    for rows in cc.group_rows(ro.group_ids, mask):
      rewards[rows] = rewards[rows] - rewards[rows].mean()
  k1 = np.asarray(ro.logp_old - ro.logp_ref)
  adv = np.zeros_like(mask)
  for i in range(mask.shape[0]):
    live = np.nonzero(mask[i])[0]
    for t in live:
      adv[i, t] = rewards[i] - beta * k1[i, live[live >= t]].sum()
  on = adv[mask > 0]
  # OpenRLHF's normalisation: population variance, floored at 1e-8.
  return (adv - on.mean()) / np.sqrt(max(on.var(), 1e-8)) * mask


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("baseline", [False, True])
def test_reinforce_pp_matches_paper(x64, shape, baseline):
  theta, ro = cc.make_case(32, **shape)
  mask = np.asarray(ro.completion_mask)
  adv = _reinforce_pp_advantage(ro, 0.01, baseline)

  def loss(th):
    ratio = jnp.exp(cc.logp_of(th, ro.tokens) - ro.logp_old)
    return -cc.token_mean(cc.surrogate(ratio, adv, 0.2, 0.2), mask), ratio

  want, ratio = jax.grad(loss, has_aux=True)(theta)
  assert 0 < cc.clipped_fraction(ratio, adv, mask, 0.2, 0.2)
  got = cc.unified_grad("reinforce_pp", dict(baseline=baseline), ro, theta)
  cc.assert_same_grad(got, want)
