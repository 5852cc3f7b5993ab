"""Importance ratios and the PPO clip gate (DESIGN.md section 2).

The gradient of PPO's min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)
is A * rho * grad logp where the unclipped term is the minimum and 0 where
the clipped term is: the clip gate g = 0 when (A > 0 and rho > 1 + eps_high)
or (A < 0 and rho < 1 - eps_low).
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import rollout as rollout_lib
from ugrad.coefficients import kl
from ugrad.coefficients import metrics


def old_logp(rollout: rollout_lib.Rollout, logp: jax.Array) -> jax.Array:
  """The sampling policy's log-probs; the current ones if none were given.

  Without `logp_old` the rollout is taken as on-policy (one update per
  rollout), where pi_old = pi_theta, so rho = 1 and nothing is clipped.
  """
  if rollout.logp_old is None:
    return jax.lax.stop_gradient(logp)
  return rollout.logp_old


def high_eps(clip_eps: float, clip_eps_high: Optional[float]) -> float:
  """The upper clip range: `clip_eps_high`, or `clip_eps` when None."""
  return clip_eps if clip_eps_high is None else clip_eps_high


def clip_gate(
    ratio: jax.Array, adv: jax.Array, eps_low: float, eps_high: float
) -> jax.Array:
  """1 where the unclipped surrogate is active, 0 where the clip is.

  Args:
    ratio: importance ratios, any shape.
    adv: advantages broadcastable to `ratio`.
    eps_low: lower clip range (rho < 1 - eps_low clips negative advantages).
    eps_high: upper clip range (rho > 1 + eps_high clips positive ones).

  Returns:
    The gate, shaped like `ratio`, in the ratio's dtype.
  """
  clipped = ((adv > 0) & (ratio > 1 + eps_high)) | (
      (adv < 0) & (ratio < 1 - eps_low)
  )
  return jnp.where(clipped, 0.0, 1.0).astype(ratio.dtype)


def clipped_policy_gradient(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    adv: jax.Array,
    *,
    clip_eps: float,
    clip_eps_high: Optional[float],
    beta: float = 0.0,
    kl_estimator: str = "k1",
    kl_in: str = "reward",
    zero_signal: Optional[jax.Array] = None
):
  """A_t * rho_t * g_t, plus the KL term when it is placed in the loss.

  The shared tail of PPO, process GRPO, RLOO and REINFORCE++ (`grpo.grpo`
  writes the same steps out): the method supplies the advantage, this adds
  the ratio, the gate, the loss-placed KL and the metrics.

  Args:
    rollout: the batch (`logp_old` if present, `logp_ref` if beta > 0).
    logp: [B, T] current log-probs.
    adv: [B, T] or [B, 1] advantages.
    clip_eps: lower clip range.
    clip_eps_high: upper clip range; None means `clip_eps`.
    beta: KL weight; the loss-placed term is added only for kl_in="loss".
    kl_estimator: "k1", "k2", "k3" or "k3_ratio" (loss only).
    kl_in: "loss" or "reward" (already folded into `adv` by the method).
    zero_signal: the method's fraction of all-equal groups, for the metrics.

  Returns:
    (coef [B, T], metrics).
  """
  ratio = jnp.exp(logp - old_logp(rollout, logp))
  gate = clip_gate(ratio, adv, clip_eps, high_eps(clip_eps, clip_eps_high))
  return with_kl_and_metrics(
      adv * ratio * gate,
      rollout,
      logp,
      beta=beta,
      kl_estimator=kl_estimator,
      kl_in=kl_in,
      ratio=ratio,
      gate=gate,
      zero_signal=zero_signal,
  )


def with_kl_and_metrics(
    coef: jax.Array,
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float,
    kl_estimator: str,
    kl_in: str,
    ratio: jax.Array,
    gate: jax.Array,
    zero_signal: Optional[jax.Array]
):
  """A policy-gradient coefficient's tail: `coef` plus the loss-placed KL
  term, zero off the completion, and its metrics.

  Args:
    coef: [B, T] the method's policy term (broadcastable).
    rollout, logp, beta, kl_estimator, kl_in, zero_signal: as
      `clipped_policy_gradient`.
    ratio: [B, T] the importance ratios, for the metrics.
    gate: [B, T] 1 where the token kept its unclipped term, for clip_frac.

  Returns:
    (coef [B, T], metrics).
  """
  if beta and kl_in == "loss":
    coef = coef + kl.loss_coef(
        kl_estimator, logp, rollout.logp_ref, beta, old_logp(rollout, logp)
    )
  coef = jnp.where(rollout.completion_mask > 0, coef, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(
      coef,
      rollout,
      logp,
      kl_estimator=kl_estimator,
      ratio=ratio,
      gate=gate,
      zero_signal=zero_signal,
  )
