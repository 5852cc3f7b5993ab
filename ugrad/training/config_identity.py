"""Config identity on resume: which settings a rerun of a workdir changed
against its checkpoint's stored config, and whether it may go on."""

import json
from typing import Optional, Sequence

from absl import logging

from ugrad import errors
from ugrad.models import layer_stack

# Config keys (and key prefixes, "x." for x's fields) that change only
# logging, evaluation or the step budget: a resumed run may change them.
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_log_every",
    "eval_every",
    "eval_sampled.",
    "eval_questions",
    "eval_split",
    "rm.eval_questions",
    "quiet",
    "profile_steps",
    "data.max_prompt_tokens",
)

# Keys whose values are compared as they resolve on this host: a run stored
# with remat "none" resumes under the later default "auto" on a CPU.
RESOLVED = {"remat": layer_stack.remat_policy}
_ABSENT = object()


def config_changes(
    stored: Optional[str],
    config,
    exempt: Sequence[str] = RESUMABLE_CHANGES,
    defaults=None,
) -> dict[str, tuple]:
  """{dotted key: (stored value, new value)} of the keys in which `config`
  differs from `stored` (a config's JSON, as a checkpoint keeps it; None:
  nothing to compare), the `exempt` keys and prefixes left out.

  A key the stored config lacks was added to ugrad after that run started;
  it is a change only when its value now is not off (False, "", 0, None or
  empty: features are added switched off) and differs from its value in
  `defaults` (a config of the defaults, when the caller has one), so an
  upgrade alone never blocks a resume.
  """
  if stored is None:
    return {}
  old, new = _flat(json.loads(stored)), _flat(json.loads(config.to_json()))
  default = {} if defaults is None else _flat(json.loads(defaults.to_json()))
  changes = {}
  for key in sorted(set(old) | set(new)):
    was, now = old.get(key, _ABSENT), new.get(key, _ABSENT)
    same = RESOLVED.get(key, lambda v: v)
    if (
        was == now
        or (_ABSENT not in (was, now) and same(was) == same(now))
        or (was is _ABSENT and (not now or default.get(key, _ABSENT) == now))
    ):
      continue
    if not any(
        key == k or (k.endswith(".") and key.startswith(k)) for k in exempt
    ):
      changes[key] = (was, now)
  return changes


def check_resume(
    workdir: str, step: int, stored: Optional[str], config, allow: bool
) -> dict[str, tuple]:
  """The `config_changes` of a run resuming in `workdir` from the
  checkpoint of step `step` (its stored config `stored`).

  Raises:
    errors.UserError: there are some and `allow` is false (the line lists
      them); the checkpoint is past `config.steps`.
  """
  if step > config.steps:
    raise errors.UserError(
        f"{workdir} was checkpointed at step {step}, past config.steps="
        f"{config.steps}; a run cannot be shortened (set steps >= {step}, "
        "or use another workdir)"
    )
  changes = config_changes(stored, config)
  where = f"{workdir} was checkpointed at step {step} with another config"
  if changes and not allow:
    raise errors.UserError(
        f"{where}: {describe_changes(changes)}; rerun with the settings it "
        "started with, or pass --allow_config_change to continue with these "
        "(recorded in the gradient log)"
    )
  if changes:
    logging.warning("%s: %s (allowed)", where, describe_changes(changes))
  return changes


def describe_changes(changes: dict[str, tuple]) -> str:
  """ "optim.lr 0.0001 -> 0.01, ..." ("absent" for a key one side lacks)."""

  def show(value):
    return "absent" if value is _ABSENT else repr(value)

  return ", ".join(
      f"{key} {show(old)} -> {show(new)}" for key, (old, new) in changes.items()
  )


def _flat(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f"{prefix}{key}."))
  return flat
