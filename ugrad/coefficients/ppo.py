"""PPO with a learned critic (Schulman et al. 2017, arXiv 1707.06347).

Per-token reward r_t = r * 1[t = last completion token] + s_t - beta *
k(x_old_t) (Ouyang et al. 2022's KL-in-reward, arXiv 2203.02155), s_t the
rollout's step rewards where it has them (a process reward, an
environment's turn rewards at each turn's last token), GAE(gamma, lambda)
(arXiv 1506.02438) over completion tokens, then the clipped surrogate's
coefficient A_t * rho_t * g_t. `value_targets` gives the critic's regression
targets (the GAE returns); the trainer fits any critic a coefficient
declares.
"""

from typing import Optional

import jax

from ugrad import rollout as rollout_lib
from ugrad.coefficients import advantages
from ugrad.coefficients import kl
from ugrad.coefficients import policy
from ugrad.coefficients import validation


def ppo_fields(*, beta: float, kl_estimator: str, kl_in: str, **unused) -> set:
  del unused
  kl.check(kl_estimator, kl_in)
  fields = {"values", "rewards", "logp_old"}
  if beta:
    fields.add("logp_ref")
  return fields


def token_rewards(
    rollout: rollout_lib.Rollout, beta: float, kl_estimator: str, kl_in: str
) -> jax.Array:
  """[B, T] r * 1[t = last] - beta * k(x_old_t) (the KL only when in reward).

  Shared by the coefficient and `value_targets`.
  """
  rewards = advantages.outcome_token_rewards(
      rollout.rewards, rollout.completion_mask
  )
  if rollout.step_rewards is not None:  # e.g. an environment's turn rewards
    rewards = rewards + rollout.step_rewards * rollout.step_mask
  if beta and kl_in == "reward":
    rewards = rewards + kl.reward_penalty(
        kl_estimator, rollout.logp_old, rollout.logp_ref, beta
    )
  return rewards


def value_targets(
    rollout: rollout_lib.Rollout,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    beta: float = 0.0,
    kl_estimator: str = "k1",
    kl_in: str = "reward",
    **unused
) -> jax.Array:
  """[B, T] GAE returns: what the critic's V(s_t) regresses on."""
  del unused
  rewards = token_rewards(rollout, beta, kl_estimator, kl_in)
  _, returns = advantages.gae(
      rewards, rollout.values, rollout.completion_mask, gamma, lam
  )
  return returns


def ppo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    gamma: float = 1.0,
    lam: float = 0.95,
    beta: float = 0.0,
    kl_estimator: str = "k1",
    kl_in: str = "reward",
    whiten_advantages: bool = False
):
  """PPO's coefficient A_t * rho_t * g_t (+ the KL term when in the loss).

  Args:
    rollout: the batch with `rewards` [B], `values` [B, T], `logp_old`
      [B, T], and `logp_ref` [B, T] when beta > 0.
    logp: [B, T] current log-probs.
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.
    gamma: discount.
    lam: GAE lambda.
    beta: KL weight.
    kl_estimator: "k1", "k2", "k3" or "k3_ratio" (loss only).
    kl_in: "reward" (per-token reward, from logp_old) or "loss".
    whiten_advantages: whiten A over the batch's completion tokens.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "ppo",
      ppo_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  mask = rollout.completion_mask
  rewards = token_rewards(rollout, beta, kl_estimator, kl_in)
  adv, _ = advantages.gae(rewards, rollout.values, mask, gamma, lam)
  if whiten_advantages:
    adv = advantages.masked_whiten(adv, mask)
  return policy.clipped_policy_gradient(
      rollout,
      logp,
      adv,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
  )
