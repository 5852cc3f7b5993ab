"""The metrics every coefficient returns, with the same keys for all."""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import masked
from ugrad import rollout as rollout_lib
from ugrad.coefficients import kl

KEYS = (
    "gc_mean",
    "gc_std",
    "gc_min",
    "gc_max",
    "gc_pos_frac",
    "gc_neg_frac",
    "gc_zero_frac",
    "clip_frac",
    "kl",
    "ratio_mean",
    "zero_signal_group_frac",
)


def coefficient_metrics(
    coef: jax.Array,
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    kl_estimator: str = "k1",
    ratio: Optional[jax.Array] = None,
    gate: Optional[jax.Array] = None,
    zero_signal: Optional[jax.Array] = None
) -> dict:
  """Scalar diagnostics over completion tokens; 0.0 where not applicable.

  Args:
    coef: [B, T] the coefficient GC.
    rollout: the batch (its completion mask, and logp_ref for `kl`).
    logp: [B, T] current log-probs.
    kl_estimator: the estimator reported as `kl` when logp_ref is present.
    ratio: [B, T] importance ratios, when the method has them.
    gate: [B, T] clip gate (1 = not clipped), when the method clips.
    zero_signal: scalar fraction of groups whose rewards (as the reward
      function gave them, before any KL is folded in) are all equal.

  Returns:
    A dict with exactly the keys of `KEYS`, each a scalar in logp's dtype.
  """
  mask = rollout.completion_mask
  zero = jnp.zeros((), logp.dtype)

  def frac(flag):
    return masked.masked_mean(flag.astype(logp.dtype), mask)

  out = {
      "gc_mean": masked.masked_mean(coef, mask),
      "gc_std": jnp.sqrt(masked.masked_var(coef, mask)),
      "gc_min": masked.masked_min(coef, mask),
      "gc_max": masked.masked_max(coef, mask),
      "gc_pos_frac": frac(coef > 0),
      "gc_neg_frac": frac(coef < 0),
      "gc_zero_frac": frac(coef == 0),
      "clip_frac": zero if gate is None else frac(gate == 0),
      "kl": zero,
      "ratio_mean": zero if ratio is None else masked.masked_mean(ratio, mask),
      "zero_signal_group_frac": zero if zero_signal is None else zero_signal,
  }
  if rollout.logp_ref is not None:
    out["kl"] = masked.masked_mean(
        kl.estimate(kl_estimator, logp, rollout.logp_ref), mask
    )
  return {k: jnp.asarray(v, logp.dtype) for k, v in out.items()}
