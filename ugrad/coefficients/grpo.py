"""The GRPO family: group-relative advantages with a clipped ratio.

GRPO: Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300), Eq. 3 and section
4.1.2-4.1.3. Dr. GRPO: Liu et al. 2025 (arXiv 2503.20783). DAPO: Yu et al.
2025 (arXiv 2503.14476). GSPO: Zheng et al. 2025 (arXiv 2507.18071).

KL placement "reward" folds -beta * sum_t k(logp_old - logp_ref) into each
outcome reward before the group statistics; "loss" adds the estimator's GC
term on every token.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad import registry
from ugrad import rollout as rollout_lib
from ugrad.coefficients import advantages
from ugrad.coefficients import groups
from ugrad.coefficients import kl
from ugrad.coefficients import metrics
from ugrad.coefficients import policy
from ugrad.coefficients import validation

SUPERVISIONS = ("outcome", "process")


def group_fields(supervision: str = "outcome", beta: float = 0.0,
                 kl_estimator: str = "k3", kl_in: str = "loss",
                 **unused) -> set:
  """The Rollout fields a GRPO-family coefficient needs; checks hparams."""
  del unused
  kl.check(kl_estimator, kl_in)
  registry.lookup(SUPERVISIONS, "supervision", supervision)
  if supervision == "process" and beta and kl_in == "reward":
    raise errors.UserError("process supervision has no outcome reward to fold the "
                     "KL into: use kl_in='loss' or beta=0")
  fields = {"group_ids"}
  if supervision == "process":
    fields |= {"step_rewards", "step_mask"}
  else:
    fields.add("rewards")
  if beta:
    fields.add("logp_ref")
  return fields


def outcome_rewards(rollout: rollout_lib.Rollout, logp: jax.Array,
                    beta: float, kl_estimator: str, kl_in: str) -> jax.Array:
  """[B]: outcome rewards, with the KL folded in when kl_in is "reward"."""
  rewards = rollout.rewards.astype(logp.dtype)
  if beta and kl_in == "reward":
    rewards = rewards + kl.sequence_penalty(
        kl_estimator, policy.old_logp(rollout, logp), rollout.logp_ref,
        rollout.completion_mask, beta)
  return rewards


def _outcome(name, rollout, logp, *, std_normalize, eps, clip_eps,
             clip_eps_high, beta, kl_estimator, kl_in):
  """Outcome-supervised group advantage through the clipped core."""
  validation.check(rollout, name,
                   group_fields("outcome", beta, kl_estimator, kl_in), logp)
  same = groups.same_group(rollout.group_ids, rollout.completion_mask)
  rewards = outcome_rewards(rollout, logp, beta, kl_estimator, kl_in)
  adv = advantages.group_normalize(rewards, same, std_normalize, eps)
  return policy.clipped_policy_gradient(
      rollout, logp, adv[:, None], clip_eps=clip_eps,
      clip_eps_high=clip_eps_high, beta=beta, kl_estimator=kl_estimator,
      kl_in=kl_in, zero_signal=groups.group_fraction(
          groups.all_equal(rollout.rewards, same), same))


def _process(rollout, logp, *, std_normalize, eps, clip_eps, clip_eps_high,
             beta, kl_estimator, kl_in):
  """Process-supervised GRPO through the clipped core."""
  validation.check(rollout, "grpo",
                   group_fields("process", beta, kl_estimator, kl_in), logp)
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  adv = advantages.process_advantages(rollout.step_rewards, rollout.step_mask,
                                      mask, same, std_normalize, eps)
  steps = (rollout.step_mask > 0) & (mask > 0)
  flat = groups.all_equal_tokens(rollout.step_rewards, steps, same)
  return policy.clipped_policy_gradient(
      rollout, logp, adv, clip_eps=clip_eps, clip_eps_high=clip_eps_high,
      beta=beta, kl_estimator=kl_estimator, kl_in=kl_in,
      zero_signal=groups.group_fraction(flat, same))


def grpo(rollout: rollout_lib.Rollout, logp: jax.Array, *,
         supervision: str = "outcome",
         clip_eps: float = 0.2,
         clip_eps_high: Optional[float] = None,
         beta: float = 0.04,
         kl_estimator: str = "k3",
         kl_in: str = "loss",
         std_normalize: bool = True,
         eps: float = 1e-6):
  """GRPO: GC = A * rho_t * g_t + beta * (pi_ref / pi - 1) (with k3).

  Args:
    rollout: the batch with `group_ids` [B]; outcome supervision needs
      `rewards` [B], process supervision `step_rewards` and `step_mask`
      [B, T]; `logp_ref` when beta > 0; `logp_old` if sampled off-policy.
    logp: [B, T] current log-probs.
    supervision: "outcome" (A_i = (r_i - mean) / (std + eps), sample std) or
      "process" (step rewards normalised over the group, summed over the
      steps ending at or after each token).
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.
    beta: KL weight (DeepSeekMath uses 0.04).
    kl_estimator: "k1", "k2" or "k3" (the paper's).
    kl_in: "loss" (the paper's) or "reward" (outcome supervision only).
    std_normalize: divide by the group's sample std.
    eps: added to the std.

  Returns:
    (coef [B, T], metrics).
  """
  hparams = dict(std_normalize=std_normalize, eps=eps, clip_eps=clip_eps,
                 clip_eps_high=clip_eps_high, beta=beta,
                 kl_estimator=kl_estimator, kl_in=kl_in)
  if supervision == "process":
    return _process(rollout, logp, **hparams)
  if supervision != "outcome":
    group_fields(supervision)  # Raises, listing the valid names.
  return _outcome("grpo", rollout, logp, **hparams)


def dr_grpo(rollout: rollout_lib.Rollout, logp: jax.Array, *,
            clip_eps: float = 0.2,
            clip_eps_high: Optional[float] = None,
            beta: float = 0.0,
            kl_estimator: str = "k3",
            kl_in: str = "loss"):
  """Dr. GRPO: A_i = r_i - mean_G r, no std; use the `constant` normaliser.

  Args: as `grpo` (outcome supervision), with beta 0 by default.

  Returns:
    (coef [B, T], metrics).
  """
  return _outcome("dr_grpo", rollout, logp, std_normalize=False, eps=0.0,
                  clip_eps=clip_eps, clip_eps_high=clip_eps_high, beta=beta,
                  kl_estimator=kl_estimator, kl_in=kl_in)


def dapo(rollout: rollout_lib.Rollout, logp: jax.Array, *,
         clip_eps: float = 0.2,
         clip_eps_high: Optional[float] = 0.28,
         beta: float = 0.0,
         kl_estimator: str = "k3",
         kl_in: str = "loss",
         eps: float = 1e-6):
  """DAPO: GRPO's advantage with clip-higher and no KL; `token` normaliser.

  Overlong reward shaping is a reward function and dynamic sampling a data
  source option; neither changes the coefficient.

  Args: as `grpo` (outcome supervision); clip_eps_high 0.28 and beta 0 by
    default (the paper's).

  Returns:
    (coef [B, T], metrics).
  """
  return _outcome("dapo", rollout, logp, std_normalize=True, eps=eps,
                  clip_eps=clip_eps, clip_eps_high=clip_eps_high, beta=beta,
                  kl_estimator=kl_estimator, kl_in=kl_in)


def gspo(rollout: rollout_lib.Rollout, logp: jax.Array, *,
         clip_eps: float = 3e-4,
         clip_eps_high: Optional[float] = 4e-4,
         beta: float = 0.0,
         kl_estimator: str = "k3",
         kl_in: str = "loss",
         std_normalize: bool = True,
         eps: float = 1e-6):
  """GSPO: GC = A_i * s_i * gate_i on every token of o_i.

  s_i = exp(mean_t (logp - logp_old)) is the length-normalised sequence
  ratio, clipped per sequence; its gradient is s_i * (1/|o_i|) sum_t grad
  logp, so with the `sequence` normaliser this GC reproduces the paper's
  objective (1/G) sum_i min(s_i A_i, clip(s_i) A_i) exactly.

  Args: as `grpo` (outcome supervision); clip ranges 3e-4 / 4e-4 and beta 0
    by default (the paper's section 5.1).

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(rollout, "gspo",
                   group_fields("outcome", beta, kl_estimator, kl_in), logp)
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  rewards = outcome_rewards(rollout, logp, beta, kl_estimator, kl_in)
  adv = advantages.group_normalize(rewards, same, std_normalize, eps)
  ratio = policy.sequence_ratio(logp, policy.old_logp(rollout, logp), mask)
  gate = policy.clip_gate(ratio, adv, clip_eps,
                          policy.high_eps(clip_eps, clip_eps_high))
  coef = jnp.broadcast_to((adv * ratio * gate)[:, None], logp.shape)
  if beta and kl_in == "loss":
    coef = coef + kl.loss_coef(kl_estimator, logp, rollout.logp_ref, beta)
  coef = jnp.where(mask > 0, coef, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(
      coef, rollout, logp, kl_estimator=kl_estimator,
      ratio=jnp.broadcast_to(ratio[:, None], logp.shape),
      gate=jnp.broadcast_to(gate[:, None], logp.shape),
      zero_signal=groups.group_fraction(
          groups.all_equal(rollout.rewards, same), same))
