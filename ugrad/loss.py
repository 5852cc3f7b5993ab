"""The one loss of ugrad: -sum(stop_gradient(GC) * logp) / N."""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad import masked
from ugrad import registry

NORMALIZERS = ("sequence", "token", "constant")


def unified_loss(
    logp: jax.Array,
    coef: jax.Array,
    mask: jax.Array,
    normalizer: str = "sequence",
    max_len: Optional[int] = None,
):
  """The unified policy-gradient loss of DeepSeekMath section 5.2.1.

  The gradient of this loss is `-1/N sum_{b,t} mask * GC * grad logp`, which is
  minus the gradient of the method's objective at the current parameters,
  whatever the coefficient `coef` depends on: `coef` is a stop-gradient
  constant.

  Rows with no completion token are left out of every normaliser, so padding
  rows contribute nothing and an all-padding batch gives a loss of 0.

  Args:
    logp: [B, T] log-probs of the tokens under the trained policy.
    coef: [B, T] gradient coefficients GC.
    mask: [B, T] completion mask (1 on trained tokens).
    normalizer: "sequence" (mean over rows of 1/|o| sum_t, the paper's),
      "token" (sum over tokens / number of completion tokens, DAPO's), or
      "constant" (sum / (rows * max_len), Dr. GRPO's).
    max_len: the completion budget L_max; required by "constant".

  Returns:
    (loss, aux): the scalar loss and a dict with the unreduced "numerator"
    (sum of -GC * logp, already divided by |o| for "sequence") and
    "denominator", so callers accumulating micro-batches or devices divide the
    global numerator by the global denominator.
  """
  registry.lookup(NORMALIZERS, "normalizer", normalizer)
  coef = jax.lax.stop_gradient(coef)
  per_token = -coef * logp
  lengths = masked.masked_count(mask, axis=-1)  # [B]
  rows = jnp.sum((lengths > 0).astype(lengths.dtype))
  if normalizer == "sequence":
    row_sums = masked.masked_sum(per_token, mask, axis=-1)
    numerator = jnp.sum(row_sums / jnp.maximum(lengths, 1))
    denominator = rows
  elif normalizer == "token":
    numerator = masked.masked_sum(per_token, mask)
    denominator = jnp.sum(lengths)
  else:
    if max_len is None:
      raise errors.UserError("the 'constant' normalizer needs max_len (L_max)")
    numerator = masked.masked_sum(per_token, mask)
    denominator = rows * max_len
  loss = numerator / jnp.maximum(denominator, 1)
  return loss, {"numerator": numerator, "denominator": denominator}
