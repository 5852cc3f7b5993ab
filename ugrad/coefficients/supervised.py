"""Supervised coefficients: SFT and (online) rejection-sampling fine-tuning."""

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
