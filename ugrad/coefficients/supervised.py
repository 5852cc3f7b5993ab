"""Supervised coefficients: SFT, (online) rejection-sampling fine-tuning and
on-policy distillation from a frozen teacher."""

import jax
import jax.numpy as jnp

from ugrad import rollout as rollout_lib
from ugrad.coefficients import metrics
from ugrad.coefficients import validation


def sft_fields(**unused) -> set:
  del unused
  return set()


def sft(rollout: rollout_lib.Rollout, logp: jax.Array):
  """SFT: GC = 1 on every completion token (the NLL's gradient).

  Args:
    rollout: the batch; only the completion mask is used.
    logp: [B, T] current log-probs.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(rollout, "sft", sft_fields(), logp)
  coef = jnp.where(rollout.completion_mask > 0, 1.0, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(coef, rollout, logp)


def rft_fields(**unused) -> set:
  del unused
  return {"rewards"}


def rft(rollout: rollout_lib.Rollout, logp: jax.Array):
  """RFT and online RFT: GC = 1[reward > 0], the NLL of correct samples.

  Args:
    rollout: the batch, with outcome `rewards` [B].
    logp: [B, T] current log-probs.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(rollout, "rft", rft_fields(), logp)
  keep = (rollout.rewards > 0)[:, None] & (rollout.completion_mask > 0)
  coef = jnp.where(keep, 1.0, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(coef, rollout, logp)


def distill_fields(**unused) -> set:
  del unused
  return {"logp_teacher"}


def distill(rollout: rollout_lib.Rollout, logp: jax.Array):
  """On-policy distillation: GC_t = log pi_teacher(o_t) - log pi(o_t) on the
  student's own samples, the per-token reverse KL KL(pi || pi_teacher) with
  each token's log-ratio as its reward (no credit to earlier tokens; Agarwal
  et al. 2024, arXiv 2306.13649; Lu and Thinking Machines 2025). In
  expectation over the sampled token it is minus the gradient of the
  reverse KL at that position. Full-vocabulary distillation (forward KL or
  JSD over the whole next-token distribution) is not a sampled-token
  coefficient and is outside this formula.

  Args:
    rollout: the student's samples with `logp_teacher` [B, T].
    logp: [B, T] the student's current log-probs.

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(rollout, "distill", distill_fields(), logp)
  signal = rollout.logp_teacher - logp
  coef = jnp.where(rollout.completion_mask > 0, signal, 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(coef, rollout, logp)
