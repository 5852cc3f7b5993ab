"""Checks on a Rollout before (and while) a coefficient uses it.

Structural problems (a missing field, a wrong shape or dtype) are caught
at trace time, so they fail even inside `jax.jit`. Value problems (a group
of one sample, a pair without one chosen and one rejected row) need concrete
arrays: `check_groups` and `check_pairs` run them whenever the arrays are
not tracers, and the trainer runs them on the host before the jitted step.

Rows with an empty completion are padding: they belong to no group and no
pair, so their ids are ignored.
"""

from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ugrad import errors
from ugrad import rollout as rollout_lib

# Rollout fields aligned with tokens, [B, T], and fields with one value per
# row, [B].
TOKEN_FIELDS = (
    "logp_old",
    "logp_ref",
    "logp_sampler",
    "logp_teacher",
    "step_rewards",
    "step_mask",
    "values",
)
ROW_FIELDS = ("rewards", "group_ids", "pair_ids", "pair_sign")
_ID_FIELDS = ("group_ids", "pair_ids")


def is_concrete(*arrays) -> bool:
  """True when no array is a tracer, so its values can be read."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def require(
    rollout: rollout_lib.Rollout, name: str, fields: Iterable[str]
) -> None:
  """Raises ValueError naming the needed fields that are None."""
  missing = sorted(f for f in fields if getattr(rollout, f) is None)
  if missing:
    raise errors.UserError(
        f"coefficient {name!r} needs rollout field(s) {', '.join(missing)}, "
        "but they are None: choose a data source and reward that provide "
        "them"
    )


def check(
    rollout: rollout_lib.Rollout,
    name: str,
    fields: Iterable[str],
    logp: Optional[jax.Array] = None,
) -> None:
  """Every check a coefficient needs before it computes anything.

  Args:
    rollout: the batch.
    name: the coefficient, for the messages.
    fields: the optional Rollout fields the coefficient needs.
    logp: [B, T] current log-probs, when available.
  """
  fields = set(fields)
  require(rollout, name, fields)
  check_shapes(rollout, name, logp)
  mask = rollout.completion_mask
  if "group_ids" in fields:
    check_groups(rollout.group_ids, mask, name)
  if "pair_ids" in fields:
    check_pairs(rollout.pair_ids, rollout.pair_sign, mask, name)


def check_shapes(
    rollout: rollout_lib.Rollout, name: str, logp: Optional[jax.Array] = None
) -> None:
  """Raises ValueError if a present field's shape or dtype does not fit.

  Args:
    rollout: the batch.
    name: the coefficient, for the message.
    logp: [B, T] current log-probs, checked when given.
  """
  want = tuple(rollout.tokens.shape)
  if len(want) != 2:
    raise errors.UserError(
        f"coefficient {name!r}: tokens must be [B, T], got " f"shape {want}"
    )
  if logp is not None and tuple(logp.shape) != want:
    raise errors.UserError(
        f"coefficient {name!r}: logp has shape "
        f"{logp.shape}, expected tokens' shape {want}"
    )
  if tuple(rollout.completion_mask.shape) != want:
    raise errors.UserError(
        f"coefficient {name!r}: completion_mask has shape "
        f"{rollout.completion_mask.shape}, expected {want}"
    )
  for field in TOKEN_FIELDS:
    x = getattr(rollout, field)
    if x is not None and tuple(x.shape) != want:
      raise errors.UserError(
          f"coefficient {name!r}: rollout.{field} has shape "
          f"{x.shape}, expected [B, T] = {want}"
      )
  for field in ROW_FIELDS:
    x = getattr(rollout, field)
    if x is not None and tuple(x.shape) != want[:1]:
      raise errors.UserError(
          f"coefficient {name!r}: rollout.{field} has shape "
          f"{x.shape}, expected [B] = {want[:1]}"
      )
  for field in _ID_FIELDS:
    x = getattr(rollout, field)
    if x is not None and not jnp.issubdtype(x.dtype, jnp.integer):
      raise errors.UserError(
          f"coefficient {name!r}: rollout.{field} has dtype "
          f"{x.dtype}, expected an integer dtype (int32)"
      )


def _real_rows(mask) -> np.ndarray:
  return np.asarray(mask).reshape(np.shape(mask)[0], -1).sum(-1) > 0


def check_groups(group_ids, mask, name: str) -> None:
  """Raises ValueError if a group has exactly one non-empty row.

  Does nothing when the arrays are tracers; `validate_rollout` runs it on the
  host before the jitted step.

  Args:
    group_ids: int [B] group of each row.
    mask: [B, T] completion mask; rows with no completion token are ignored.
    name: the coefficient, for the message.
  """
  if not is_concrete(group_ids, mask):
    return
  ids = np.asarray(group_ids)[_real_rows(mask)]
  values, counts = np.unique(ids, return_counts=True)
  lonely = values[counts < 2]
  if lonely.size:
    raise errors.UserError(
        f"coefficient {name!r} needs groups of at least 2 samples (the "
        f"sample std and leave-one-out mean are undefined for one); "
        f"group_ids with a single non-empty row: {lonely.tolist()}"
    )


def check_pairs(pair_ids, pair_sign, mask, name: str) -> None:
  """Raises ValueError unless each pair has one +1 row and one -1 row.

  Does nothing when the arrays are tracers.

  Args:
    pair_ids: int [B] pair of each row.
    pair_sign: [B] +1 for the chosen row, -1 for the rejected row.
    mask: [B, T] completion mask; rows with no completion token are ignored.
    name: the coefficient, for the message.
  """
  if not is_concrete(pair_ids, pair_sign, mask):
    return
  real = _real_rows(mask)
  ids = np.asarray(pair_ids)[real]
  signs = np.asarray(pair_sign)[real]
  bad_sign = sorted(set(ids[(signs != 1) & (signs != -1)].tolist()))
  if bad_sign:
    raise errors.UserError(
        f"coefficient {name!r}: pair_sign must be +1 or -1; "
        f"pairs with another value: {bad_sign}"
    )
  for pid in np.unique(ids):
    got = sorted(signs[ids == pid].tolist())
    if got != [-1, 1]:
      raise errors.UserError(
          f"coefficient {name!r}: pair {int(pid)} must have exactly one "
          f"chosen (+1) and one rejected (-1) non-empty row; its signs are "
          f"{got}"
      )
