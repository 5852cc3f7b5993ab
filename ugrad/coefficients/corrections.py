"""Sampler corrections: a stop-gradient factor on any method's coefficient.

The sampler's log-probs (`Rollout.logp_sampler`) and the trainer's at the
same parameters (`Rollout.logp_old`, recomputed) differ where the sampler
truncates (top-k / top-p) or computes at another precision (a bf16
sampler, a float32 trainer). With the per-token ratio
w_t = pi_train / pi_sampler = exp(logp_old - logp_sampler), the factor
multiplying GC is:

* `tis`: min(w_t, cap), truncated importance sampling (verl, TRL);
* `mis`: w_t where w_t <= cap, else 0: masked importance sampling;
* `icepop`: 1 where floor <= w_t <= cap, else 0, a two-sided token mask
  (IcePop, Ling team 2025);
* `seq_mask`: 1 on every token of a sequence whose geometric-mean ratio
  exp(mean_t log w_t) is in [floor, cap], else 0.

The factor is a constant of the batch (both log-probs are), so the unified
gradient becomes sum factor * GC * grad logp for whichever method runs.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad import masked
from ugrad import registry

# Name -> (floor, cap) defaults; None where the mode has no such bound.
CORRECTIONS = {
    "none": (None, None),
    "tis": (None, 2.0),
    "mis": (None, 2.0),
    "icepop": (0.5, 2.0),
    "seq_mask": (0.999, 1.001),
}


def bounds(
    name: str, floor: Optional[float] = None, cap: Optional[float] = None
) -> tuple:
  """(floor, cap) of correction `name`, the mode's defaults where None.

  Raises:
    errors.UserError: for an unknown name or bounds that are not
      0 <= floor < cap.
  """
  default_floor, default_cap = registry.lookup(
      CORRECTIONS, "sampler_correction", name
  )
  floor = default_floor if floor is None else floor
  cap = default_cap if cap is None else cap
  if name != "none" and not 0 <= (floor or 0.0) < cap:
    raise errors.UserError(
        f"sampler_correction {name!r}: need 0 <= floor < cap, got floor "
        f"{floor}, cap {cap}"
    )
  return floor, cap


def factor(
    name: str,
    logp_train: jax.Array,
    logp_sampler: jax.Array,
    mask: jax.Array,
    floor: Optional[float] = None,
    cap: Optional[float] = None,
) -> tuple[jax.Array, dict]:
  """The correction's factor [B, T] and its metrics.

  Args:
    name: a key of `CORRECTIONS`.
    logp_train: [B, T] the trainer's log-probs at the sampling parameters.
    logp_sampler: [B, T] the sampler's log-probs of the same tokens.
    mask: [B, T] completion mask.
    floor, cap: the bounds; None takes the mode's default.

  Returns:
    (factor [B, T], 0 off the mask; metrics): `sampler_ratio_mean`, and
    `sampler_truncated_frac` (tis) or `sampler_masked_frac` (the masks):
    the fraction of completion tokens the correction changed.
  """
  floor, cap = bounds(name, floor, cap)
  log_w = jax.lax.stop_gradient(logp_train - logp_sampler)
  ratio = jnp.exp(log_w)
  ones = jnp.ones_like(ratio)
  metrics = {"sampler_ratio_mean": masked.masked_mean(ratio, mask)}
  if name == "none":
    out = ones
  elif name == "tis":
    out = jnp.minimum(ratio, cap)
    metrics["sampler_truncated_frac"] = masked.masked_mean(
        (ratio > cap).astype(ratio.dtype), mask
    )
  else:
    if name == "mis":
      keep = ratio <= cap
      out = jnp.where(keep, ratio, 0.0)
    elif name == "icepop":
      keep = (ratio >= floor) & (ratio <= cap)
      out = keep.astype(ratio.dtype)
    else:  # seq_mask
      geo = jnp.exp(masked.masked_mean(log_w, mask, axis=-1))
      keep = jnp.broadcast_to(
          ((geo >= floor) & (geo <= cap))[:, None], ratio.shape
      )
      out = keep.astype(ratio.dtype)
    metrics["sampler_masked_frac"] = masked.masked_mean(
        (~keep).astype(ratio.dtype), mask
    )
  return jnp.where(mask > 0, out, 0.0), metrics
