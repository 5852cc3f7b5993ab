"""The GRPO family: group-relative advantages with a clipped ratio.

GRPO: Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300), Eq. 3 and section
4.1.2-4.1.3. Dr. GRPO: Liu et al. 2025 (arXiv 2503.20783). DAPO: Yu et al.
2025 (arXiv 2503.14476). GSPO: Zheng et al. 2025 (arXiv 2507.18071).

`grpo` is the reference: its body is the coefficient of DESIGN.md section 2
written out in order,

  GC_t = A_i * rho_t * g_t + beta * (pi_ref / pi - 1)

(the last term is k3's; `kl` has the others). Each other method changes one
step: `grpo_process` the advantage (per token, from step rewards), `gspo`
the ratio (one per sequence), `dr_grpo` and `dapo` only hyper-parameters.

KL placement "reward" folds -beta * sum_t k(logp_old - logp_ref) into each
outcome reward before the group statistics; "loss" adds the estimator's GC
term on every token.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import masked
from ugrad import rollout as rollout_lib
from ugrad.coefficients import advantages
from ugrad.coefficients import groups
from ugrad.coefficients import kl
from ugrad.coefficients import metrics
from ugrad.coefficients import policy
from ugrad.coefficients import validation


def outcome_fields(
    *, beta: float, kl_estimator: str, kl_in: str, **unused
) -> set:
  """The Rollout fields of outcome-supervised methods; checks hparams (the
  defaults are the coefficient functions' keywords, declared once)."""
  del unused
  kl.check(kl_estimator, kl_in)
  fields = {"rewards", "group_ids"}
  if beta:
    fields.add("logp_ref")
  return fields


def process_fields(*, beta: float, kl_estimator: str, **unused) -> set:
  """The Rollout fields of `grpo_process`; checks hparams."""
  del unused
  kl.check(kl_estimator, "loss")
  fields = {"step_rewards", "step_mask", "group_ids"}
  if beta:
    fields.add("logp_ref")
  return fields


def outcome_rewards(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    beta: float,
    kl_estimator: str,
    kl_in: str,
) -> jax.Array:
  """[B]: outcome rewards, with the KL folded in when kl_in is "reward"."""
  rewards = rollout.rewards.astype(logp.dtype)
  if beta and kl_in == "reward":
    rewards = rewards + kl.sequence_penalty(
        kl_estimator,
        policy.old_logp(rollout, logp),
        rollout.logp_ref,
        rollout.completion_mask,
        beta,
    )
  return rewards


def grpo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    kl_in: str = "loss",
    std_normalize: bool = True,
    eps: float = 1e-6
):
  """GRPO, outcome supervision: GC = A_i * rho_t * g_t + beta * (pi_ref/pi - 1).

  Args:
    rollout: the batch with `rewards` [B] and `group_ids` [B]; `logp_ref`
      when beta > 0; `logp_old` if sampled off-policy.
    logp: [B, T] current log-probs.
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.
    beta: KL weight (DeepSeekMath uses 0.04).
    kl_estimator: "k1", "k2", "k3" (the paper's) or "k3_ratio".
    kl_in: "loss" (the paper's) or "reward".
    std_normalize: divide by the group's sample std.
    eps: added to the std.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "grpo",
      outcome_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  # Group advantage A_i = (r_i - mean_G r) / (std_G r + eps).
  rewards = outcome_rewards(rollout, logp, beta, kl_estimator, kl_in)
  adv = groups.normalize(rewards, same, std_normalize, eps)[:, None]
  # Ratio rho_t = pi_theta / pi_old (1 on-policy).
  ratio = jnp.exp(logp - policy.old_logp(rollout, logp))
  # Clip gate g_t: 0 where the clipped surrogate is the minimum.
  gate = policy.clip_gate(
      ratio, adv, clip_eps, policy.high_eps(clip_eps, clip_eps_high)
  )
  # GC = A * rho * g, plus the KL term beta * (pi_ref / pi - 1) (k3) when
  # the KL is in the loss (kl_in="reward" put it in A).
  coef = adv * ratio * gate
  if beta and kl_in == "loss":
    coef = coef + kl.loss_coef(
        kl_estimator,
        logp,
        rollout.logp_ref,
        beta,
        policy.old_logp(rollout, logp),
    )
  coef = jnp.where(mask > 0, coef, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(
      coef,
      rollout,
      logp,
      kl_estimator=kl_estimator,
      ratio=ratio,
      gate=gate,
      zero_signal=groups.zero_signal(rollout.rewards, same),
  )


def process_advantages(
    step_rewards: jax.Array,
    steps: jax.Array,
    mask: jax.Array,
    same: jax.Array,
    std_normalize: bool = True,
    eps: float = 1e-6,
) -> jax.Array:
  """GRPO process supervision's advantage (DeepSeekMath section 4.1.3).

  The step rewards of a whole group are normalised together (mean and
  sample std over every step of every sample in the group); each token then
  gets the sum of the normalised rewards of the steps ending at or after it,
  the last step ending at the completion's last token (the EOS after its
  last visible character is part of it, as DeepSeekMath's index(j) of the
  last step is the response's end).

  Args:
    step_rewards: [B, T] reward of each step at its last token.
    steps: [B, T] bool, the last token of each step inside the completion.
    mask: [B, T] completion mask.
    same: [B, B] same-group matrix.
    std_normalize: divide by the sample std (ddof=1) plus `eps`.
    eps: added to the std, outside the square root.

  Returns:
    [B, T] advantages, 0 off the completion mask and in groups whose step
    rewards are all equal.
  """
  count = groups.group_sum(masked.masked_count(steps, axis=-1), same)
  total = groups.group_sum(
      masked.masked_sum(step_rewards, steps, axis=-1), same
  )
  centred = step_rewards - (total / jnp.maximum(count, 1))[:, None]
  normed = centred
  if std_normalize:
    dev = groups.group_sum(
        masked.masked_sum(jnp.square(centred), steps, axis=-1), same
    )
    std = jnp.sqrt(dev / jnp.maximum(count - 1, 1))
    normed = centred / (std + eps)[:, None]
  flat = groups.all_equal(step_rewards, same, steps)
  normed = jnp.where(steps & ~flat[:, None], normed, 0.0)
  # The last step ends at the completion's last token, so its EOS is judged.
  normed = advantages.last_step_to_end(normed, steps, mask)
  return advantages.reverse_cumsum(normed, mask)


def grpo_process(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    std_normalize: bool = True,
    eps: float = 1e-6
):
  """GRPO, process supervision: `grpo` with A_t from step rewards.

  A_t = sum over the steps j ending at or after t of rtilde_j, rtilde = the
  step rewards normalised over all steps of the group. There is no outcome
  reward to fold a KL into, so the KL term is always in the loss.

  Args:
    rollout: the batch with `step_rewards`, `step_mask` [B, T] and
      `group_ids` [B]; `logp_ref` when beta > 0; `logp_old` if sampled
      off-policy.
    logp: [B, T] current log-probs.
    clip_eps, clip_eps_high, beta, kl_estimator, std_normalize, eps: as
      `grpo`.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "grpo_process",
      process_fields(beta=beta, kl_estimator=kl_estimator),
      logp,
  )
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  steps = (rollout.step_mask > 0) & (mask > 0)
  adv = process_advantages(
      rollout.step_rewards, steps, mask, same, std_normalize, eps
  )
  return policy.clipped_policy_gradient(
      rollout,
      logp,
      adv,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in="loss",
      zero_signal=groups.zero_signal(rollout.step_rewards, same, steps),
  )


def dr_grpo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_in: str = "loss"
):
  """Dr. GRPO: `grpo` with A_i = r_i - mean_G r (no std) and beta 0.

  Use the `constant` normaliser (the registry's).

  Args: as `grpo`.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "dr_grpo",
      outcome_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  return grpo(
      rollout,
      logp,
      std_normalize=False,
      eps=0.0,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
  )


def dapo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = 0.28,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_in: str = "loss",
    eps: float = 1e-6
):
  """DAPO: `grpo` with clip-higher (0.2 / 0.28) and no KL; `token` normaliser.

  Overlong reward shaping is a reward function and dynamic sampling a data
  source option; neither changes the coefficient.

  Args: as `grpo`; clip_eps_high 0.28 and beta 0 by default (the paper's).

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "dapo",
      outcome_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  return grpo(
      rollout,
      logp,
      std_normalize=True,
      eps=eps,
      clip_eps=clip_eps,
      clip_eps_high=clip_eps_high,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
  )


def gspo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: float = 3e-4,
    clip_eps_high: Optional[float] = 4e-4,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_in: str = "loss",
    std_normalize: bool = True,
    eps: float = 1e-6
):
  """GSPO: GC = A_i * s_i * gate_i on every token of o_i.

  s_i = exp(mean_t (logp - logp_old)) is the length-normalised sequence
  ratio, clipped per sequence; its gradient is s_i * (1/|o_i|) sum_t grad
  logp, so with the `sequence` normaliser this GC reproduces the paper's
  objective (1/G) sum_i min(s_i A_i, clip(s_i) A_i) exactly.

  Args: as `grpo`; clip ranges 3e-4 / 4e-4 and beta 0 by default (the
    paper's section 5.1).

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout,
      "gspo",
      outcome_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  rewards = outcome_rewards(rollout, logp, beta, kl_estimator, kl_in)
  adv = groups.normalize(rewards, same, std_normalize, eps)
  # The sequence ratio s_i and its gate, one per row.
  ratio = jnp.exp(
      masked.masked_mean(logp - policy.old_logp(rollout, logp), mask, axis=-1)
  )
  gate = policy.clip_gate(
      ratio, adv, clip_eps, policy.high_eps(clip_eps, clip_eps_high)
  )
  return policy.with_kl_and_metrics(
      jnp.broadcast_to((adv * ratio * gate)[:, None], logp.shape),
      rollout,
      logp,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
      ratio=jnp.broadcast_to(ratio[:, None], logp.shape),
      gate=jnp.broadcast_to(gate[:, None], logp.shape),
      zero_signal=groups.zero_signal(rollout.rewards, same),
  )


def cispo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    clip_eps: Optional[float] = None,
    clip_eps_high: float = 4.0,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_in: str = "loss",
    std_normalize: bool = True,
    eps: float = 1e-6
):
  """CISPO (MiniMax-M1, arXiv 2506.13585): GC = sg(clip(rho_t)) * A_i.

  The objective is (1 / sum_i |o_i|) sum_{i,t} sg(clip(rho_t, 1 - eps_low,
  1 + eps_high)) A_i log pi_t: the importance weight is clipped and
  stopped, never the gradient, so every token keeps its gradient (no gate);
  `token` normaliser. A_i is GRPO's group advantage.

  Args: as `grpo`; clip_eps (the lower range) None: no lower bound (the
    paper's); clip_eps_high 4.0; beta 0.

  Returns:
    (coef [B, T], metrics); clip_frac is the fraction of tokens whose
    weight was clipped.
  """
  validation.check(
      rollout,
      "cispo",
      outcome_fields(beta=beta, kl_estimator=kl_estimator, kl_in=kl_in),
      logp,
  )
  mask = rollout.completion_mask
  same = groups.same_group(rollout.group_ids, mask)
  rewards = outcome_rewards(rollout, logp, beta, kl_estimator, kl_in)
  adv = groups.normalize(rewards, same, std_normalize, eps)[:, None]
  ratio = jnp.exp(logp - policy.old_logp(rollout, logp))
  low = 0.0 if clip_eps is None else 1.0 - clip_eps
  weight = jnp.clip(ratio, low, 1.0 + clip_eps_high)
  return policy.with_kl_and_metrics(
      jax.lax.stop_gradient(weight) * adv,
      rollout,
      logp,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
      ratio=ratio,
      gate=(weight == ratio).astype(logp.dtype),
      zero_signal=groups.zero_signal(rollout.rewards, same),
  )
