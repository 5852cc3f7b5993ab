"""Groups of a sampled batch: their rewards, which carry signal, their rows.

A sampling source draws G completions per question, laid out as
consecutive rows (prompt-major). These helpers read a rollout group by
group: the [Q, G] rewards (outcome, or step rewards summed), which groups
have rewards that are not all equal (the groups that carry a learning
signal, kept by dynamic sampling and paired for DPO), and the row indices
of chosen groups for selecting them from a batch.
"""

from typing import Sequence

import numpy as np

from ugrad import errors
from ugrad import masked
from ugrad import rollout as rollout_lib


def rewards(r: rollout_lib.Rollout, group_size: int) -> np.ndarray:
  """[Q, G] rewards (step rewards summed when there is no outcome reward)."""
  if r.rewards is not None:
    flat = np.asarray(r.rewards)
  elif r.step_rewards is not None:
    flat = np.asarray(r.step_rewards).sum(-1)
  else:
    raise errors.UserError(
        "sampling sources compare rewards within each "
        "group, but the reward gave none: use a reward "
        "that gives outcome or step rewards (e.g. "
        "'rule'), not 'none'"
    )
  return flat.reshape(-1, group_size)


def varied(r: rollout_lib.Rollout, group_size: int) -> np.ndarray:
  """Indices of the groups whose rewards are not all equal.

  The test is the coefficients' (`masked.group_all_equal`). With step
  rewards only, a group varies when the rewards at its step ends differ, as
  process supervision sees them: equal sums of different step rewards still
  carry signal, equal rewards over steps of any count do not. A group with
  a NaN reward varies, as the coefficients see it (its advantages are NaN).
  """
  if r.rewards is not None or r.step_rewards is None:
    values = rewards(r, group_size).reshape(-1, 1)
    where = True
  else:
    values = np.asarray(r.step_rewards)
    where = np.asarray(r.completion_mask) > 0
    if r.step_mask is not None:
      where &= np.asarray(r.step_mask) > 0
  group = np.arange(len(values)) // group_size
  same = group[:, None] == group[None, :]
  flat = masked.group_all_equal(values, where, same, np)
  return np.flatnonzero(~flat[::group_size])


def rows(groups: Sequence[int], group_size: int) -> np.ndarray:
  """The row indices of `groups`, each G consecutive rows, in that order."""
  groups = np.asarray(groups, np.int64)
  return (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)
