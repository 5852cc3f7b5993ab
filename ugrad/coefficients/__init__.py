"""Gradient coefficients: every method is one `GC[b, t]` for the unified loss.

A coefficient is a pure, jit-able function

    fn(rollout, logp, **hparams) -> (coef [B, T], metrics)

selected by name from `COEFFICIENTS`. It never folds the normaliser in: that
is the separate `normalizer` of `ugrad.unified_loss`, and `NORMALIZERS`
gives the one each method's objective is written with (the one under which
the unified gradient equals the textbook gradient).
"""

import functools
import inspect
from typing import Callable, Mapping, Optional

from ugrad import rollout as rollout_lib
from ugrad.coefficients import dpo as dpo_lib
from ugrad.coefficients import grpo as grpo_lib
from ugrad.coefficients import metrics as metrics_lib
from ugrad.coefficients import ppo as ppo_lib
from ugrad.coefficients import reinforce as reinforce_lib
from ugrad.coefficients import supervised
from ugrad.coefficients import validation

COEFFICIENTS = {
    "sft": supervised.sft,
    "rft": supervised.rft,
    "dpo": dpo_lib.dpo,
    "ppo": ppo_lib.ppo,
    "grpo": grpo_lib.grpo,
    "dr_grpo": grpo_lib.dr_grpo,
    "dapo": grpo_lib.dapo,
    "gspo": grpo_lib.gspo,
    "rloo": reinforce_lib.rloo,
    "reinforce_pp": reinforce_lib.reinforce_pp,
}

# name -> fn(**all_hparams) -> the optional Rollout fields it needs.
_FIELDS = {
    "sft": supervised.sft_fields,
    "rft": supervised.rft_fields,
    "dpo": dpo_lib.dpo_fields,
    "ppo": ppo_lib.ppo_fields,
    "grpo": grpo_lib.group_fields,
    "dr_grpo": grpo_lib.group_fields,
    "dapo": grpo_lib.group_fields,
    "gspo": grpo_lib.group_fields,
    "rloo": reinforce_lib.rloo_fields,
    "reinforce_pp": reinforce_lib.reinforce_pp_fields,
}

# The normaliser each method's objective uses.
NORMALIZERS = {
    "sft": "sequence",
    "rft": "sequence",
    "dpo": "sequence",
    "ppo": "sequence",
    "grpo": "sequence",
    "dr_grpo": "constant",
    "dapo": "token",
    "gspo": "sequence",
    "rloo": "constant",
    "reinforce_pp": "token",
}

METRIC_KEYS = metrics_lib.KEYS


def _lookup(name: str) -> Callable:
  if name not in COEFFICIENTS:
    raise ValueError(f"unknown coefficient {name!r}; valid: "
                     f"{', '.join(COEFFICIENTS)}")
  return COEFFICIENTS[name]


def default_hparams(name: str) -> dict:
  """The hyper-parameters of coefficient `name` and their defaults."""
  params = inspect.signature(_lookup(name)).parameters.values()
  return {p.name: p.default for p in params
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def bind_hparams(name: str, hparams: Optional[Mapping] = None) -> dict:
  """Defaults of `name` updated with `hparams`; unknown names raise.

  Args:
    name: a key of `COEFFICIENTS`.
    hparams: hyper-parameter overrides.

  Returns:
    Every hyper-parameter of the coefficient with its value.

  Raises:
    ValueError: for an unknown coefficient, an unknown hyper-parameter (the
      message lists the valid ones) or an invalid choice such as an unknown
      `kl_estimator`.
  """
  full = default_hparams(name)
  unknown = sorted(set(hparams or {}) - set(full))
  if unknown:
    raise ValueError(
        f"unknown hyper-parameter(s) {', '.join(unknown)} for coefficient "
        f"{name!r}; valid: {', '.join(full) or '(none)'}")
  full.update(hparams or {})
  _FIELDS[name](**full)  # Validates the choices (estimator names, ...).
  return full


def required_fields(name: str, hparams: Optional[Mapping] = None) -> set:
  """The optional Rollout fields coefficient `name` needs with `hparams`.

  `tokens` and `completion_mask` are always present and not listed.
  `logp_old` is listed only where it is required (PPO); elsewhere it is
  used when present and the rollout is taken as on-policy otherwise.

  Args:
    name: a key of `COEFFICIENTS`.
    hparams: hyper-parameter overrides (defaults fill the rest).

  Returns:
    A set of Rollout attribute names, e.g. {"rewards", "group_ids"}.
  """
  return set(_FIELDS[name](**bind_hparams(name, hparams)))


def make_coefficient(name: str, **hparams) -> Callable:
  """Binds hyper-parameters: returns `fn(rollout, logp) -> (coef, metrics)`.

  Raises:
    ValueError: as `bind_hparams`.
  """
  bind_hparams(name, hparams)
  return functools.partial(_lookup(name), **hparams)


def validate_rollout(name: str, rollout: rollout_lib.Rollout,
                     hparams: Optional[Mapping] = None) -> None:
  """Host-side check of a concrete rollout before the jitted step.

  Checks the needed fields are present with the right shapes and dtypes,
  every group has at least 2 non-empty rows, and every DPO pair has one +1
  and one -1 row.

  Raises:
    ValueError: naming the problem.
  """
  validation.check(rollout, name, required_fields(name, hparams))


__all__ = [
    "COEFFICIENTS", "NORMALIZERS", "METRIC_KEYS", "bind_hparams",
    "default_hparams", "make_coefficient", "required_fields",
    "validate_rollout",
]
