"""Direct preference optimisation as a gradient coefficient.

References: Rafailov et al. 2023 (arXiv 2305.18290); the length-normalised
log-ratio of DeepSeekMath (arXiv 2402.03300, appendix A.1.4); conservative
DPO's label smoothing (Mitchell 2023, "A note on DPO with noisy preferences").
"""

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad import masked
from ugrad import rollout as rollout_lib
from ugrad.coefficients import groups
from ugrad.coefficients import metrics
from ugrad.coefficients import validation

# The sequence normaliser averages over rows, two per pair; the DPO loss
# averages over pairs.
ROWS_PER_PAIR = 2


def dpo_fields(*, label_smoothing: float, **unused) -> set:
  del unused
  if not 0.0 <= label_smoothing <= 0.5:
    raise errors.UserError(
        f"dpo: label_smoothing must be in [0, 0.5], got " f"{label_smoothing}"
    )
  return {"pair_ids", "pair_sign", "logp_ref"}


def dpo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 0.1,
    length_normalize: bool = True,
    label_smoothing: float = 0.0,
):
  """DPO's coefficient, exact for the `sequence` normaliser.

  With d_p = L+_p - L-_p, L = (1/|o|) sum_t (logp - logp_ref) (the plain sum
  when `length_normalize` is False), the loss over P pairs is
  mean_p [-(1 - ls) log sig(beta d_p) - ls log sig(-beta d_p)], whose gradient
  is -(1/P) sum_p beta w_p grad d_p, w = (1 - ls) sig(-beta d) - ls sig(beta d).
  The unified loss with the sequence normaliser averages over 2P rows and
  divides each row by |o|, so GC = 2 * sign * beta * w (times |o| when
  length_normalize is False).

  Args:
    rollout: the batch: 2P non-empty rows with `pair_ids` [B] (one +1 and one
      -1 `pair_sign` [B] row per pair) and `logp_ref` [B, T]. Rows with no
      completion are padding and are ignored.
    logp: [B, T] current log-probs.
    beta: inverse temperature of the implicit reward.
    length_normalize: average the log-ratio over tokens (DeepSeekMath's form)
      instead of summing it (Rafailov et al.).
    label_smoothing: probability that a preference label is flipped (cDPO).

  Returns:
    (coef [B, T], metrics).
  """
  validation.check(
      rollout, "dpo", dpo_fields(label_smoothing=label_smoothing), logp
  )
  mask = rollout.completion_mask
  lengths = masked.masked_count(mask, axis=-1)
  logratio = masked.masked_sum(logp - rollout.logp_ref, mask, axis=-1)
  if length_normalize:
    logratio = logratio / jnp.maximum(lengths, 1)
  sign = rollout.pair_sign.astype(logp.dtype)
  same = groups.same_group(rollout.pair_ids, mask)
  margin = groups.group_sum(sign * logratio, same)  # L+ - L-, on both rows.
  weight = (1 - label_smoothing) * jax.nn.sigmoid(
      -beta * margin
  ) - label_smoothing * jax.nn.sigmoid(beta * margin)
  scale = ROWS_PER_PAIR * beta * sign * weight
  if not length_normalize:
    scale = scale * lengths
  coef = jnp.where(mask > 0, scale[:, None], 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(coef, rollout, logp)
