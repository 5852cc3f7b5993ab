"""REINFORCE-style coefficients: RLOO and REINFORCE++.

RLOO: Ahmadian et al. 2024 (arXiv 2402.14740), after Kool et al. 2019.
REINFORCE++: Hu 2025 (arXiv 2501.03262), as implemented in OpenRLHF.
"""

from typing import Optional

import jax

from ugrad import rollout as rollout_lib
from ugrad.coefficients import advantages
from ugrad.coefficients import groups
from ugrad.coefficients import kl
from ugrad.coefficients import policy
from ugrad.coefficients import validation


def rloo_fields(*, beta: float, **unused) -> set:
  del unused
  return {"rewards", "group_ids"} | ({"logp_ref"} if beta else set())


def rloo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 0.0,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None
):
  """RLOO: A_i = r'_i - mean_{j != i} r'_j, r' = r - beta * sum_t k1_t.

  REINFORCE with token-sum aggregation: use the `constant` normaliser, which
  is the token sum up to the constant 1 / L_max. When `logp_old` differs
  from `logp` the PPO clip applies (on-policy it is the identity).

  Args:
    rollout: the batch with `rewards` [B] and `group_ids` [B]; `logp_ref`
      when beta > 0; `logp_old` if sampled off-policy (the k1 term and the
      ratio use it; the current log-probs otherwise).
    logp: [B, T] current log-probs.
    beta: KL weight (k1, folded into the sequence reward).
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(rollout, "rloo", rloo_fields(beta=beta), logp)
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  rewards = rollout.rewards.astype(logp.dtype)
  if beta:
    rewards = rewards + kl.sequence_penalty(
        "k1", policy.old_logp(rollout, logp), rollout.logp_ref, mask, beta
    )
  adv = groups.leave_one_out(rewards, same)
  return policy.clipped_policy_gradient(
      rollout,
      logp,
      adv[:, None],
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      zero_signal=groups.zero_signal(rollout.rewards, same),
  )


def reinforce_pp_fields(*, beta: float, baseline: bool, **unused) -> set:
  del unused
  fields = {"rewards"}
  if beta:
    fields.add("logp_ref")
  if baseline:
    fields.add("group_ids")
  return fields


def reinforce_pp(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 0.01,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    baseline: bool = False,
    whiten_eps: float = 1e-8
):
  """REINFORCE++: A_t = r - beta * sum_{s >= t} k1_s, whitened, PPO clip.

  k1_s = logp_old - logp_ref per token. The advantage is whitened over every
  completion token of the batch; use the `token` normaliser (OpenRLHF's
  token-level policy loss). beta 0.01 is OpenRLHF's `init_kl_coef` default.

  Args:
    rollout: the batch with `rewards` [B]; `logp_ref` when beta > 0;
      `group_ids` [B] when `baseline`; `logp_old` if sampled off-policy.
    logp: [B, T] current log-probs.
    beta: KL weight (k1, in the per-token reward).
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.
    baseline: subtract the group mean reward first (REINFORCE++-baseline).
    whiten_eps: floor of the whitening variance.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "reinforce_pp",
      reinforce_pp_fields(beta=beta, baseline=baseline),
      logp,
  )
  mask = rollout.completion_mask
  rewards = rollout.rewards.astype(logp.dtype)
  zero_signal = None
  if baseline:
    same = groups.same_group(rollout.group_ids, mask)
    zero_signal = groups.zero_signal(rollout.rewards, same)
    rewards = groups.normalize(rewards, same, std_normalize=False)
  token_rewards = advantages.outcome_token_rewards(rewards, mask)
  if beta:
    token_rewards = token_rewards + kl.reward_penalty(
        "k1", policy.old_logp(rollout, logp), rollout.logp_ref, beta
    )
  adv = advantages.reverse_cumsum(token_rewards, mask)
  adv = advantages.masked_whiten(adv, mask, whiten_eps)
  return policy.clipped_policy_gradient(
      rollout,
      logp,
      adv,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      zero_signal=zero_signal,
  )
