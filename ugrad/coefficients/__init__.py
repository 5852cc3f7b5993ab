"""Gradient coefficients: every method is one `GC[b, t]` for the unified loss.

A method is one `Coefficient` record in `COEFFICIENTS`:

* `fn(rollout, logp, **hparams) -> (coef [B, T], metrics)`, pure and
  jit-able; it never folds the normaliser in;
* `fields(**hparams)`: the optional Rollout fields it reads (which the
  start-up check compares with what the source and reward provide); it also
  validates the hyper-parameters;
* `normalizer`: the N of `ugrad.unified_loss` its textbook objective is
  written with (under which the unified gradient equals the textbook one);
* `value_targets(rollout, **hparams) -> [B, T]` (optional): the regression
  targets of a learned critic. A coefficient that declares them reads
  `values`, and the trainer trains that critic beside the policy (PPO).

Code outside the package adds a method with `ugrad.register_coefficient`.
"""

import dataclasses
import functools
import inspect
from typing import Callable, Mapping, Optional

from ugrad import errors
from ugrad import loss as loss_lib
from ugrad import registry
from ugrad import rollout as rollout_lib
from ugrad.coefficients import dpo as dpo_lib
from ugrad.coefficients import grpo as grpo_lib
from ugrad.coefficients import metrics as metrics_lib
from ugrad.coefficients import ppo as ppo_lib
from ugrad.coefficients import preference
from ugrad.coefficients import reinforce as reinforce_lib
from ugrad.coefficients import supervised
from ugrad.coefficients import validation


@dataclasses.dataclass(frozen=True)
class Coefficient:
  """One method's gradient coefficient and what it needs.

  Attributes:
    fn: `(rollout, logp, **hparams) -> (coef [B, T], metrics)`; its
      keyword-only arguments are the method's hyper-parameters.
    fields: `(**hparams) -> set` of optional Rollout fields it reads;
      raises ValueError for an invalid hyper-parameter choice.
    normalizer: "sequence", "token" or "constant".
    value_targets: `(rollout, **hparams) -> [B, T]` returns a critic
      regresses on, or None when the method needs no critic.
  """

  fn: Callable
  fields: Callable[..., set]
  normalizer: str = "sequence"
  value_targets: Optional[Callable] = None


COEFFICIENTS: dict[str, Coefficient] = {
    "sft": Coefficient(supervised.sft, supervised.sft_fields),
    "rft": Coefficient(supervised.rft, supervised.rft_fields),
    "dpo": Coefficient(dpo_lib.dpo, dpo_lib.dpo_fields),
    "ppo": Coefficient(
        ppo_lib.ppo, ppo_lib.ppo_fields, value_targets=ppo_lib.value_targets
    ),
    "grpo": Coefficient(grpo_lib.grpo, grpo_lib.outcome_fields),
    "grpo_process": Coefficient(grpo_lib.grpo_process, grpo_lib.process_fields),
    "dr_grpo": Coefficient(
        grpo_lib.dr_grpo, grpo_lib.outcome_fields, "constant"
    ),
    "dapo": Coefficient(grpo_lib.dapo, grpo_lib.outcome_fields, "token"),
    "gspo": Coefficient(grpo_lib.gspo, grpo_lib.outcome_fields),
    "rloo": Coefficient(
        reinforce_lib.rloo, reinforce_lib.rloo_fields, "constant"
    ),
    "reinforce_pp": Coefficient(
        reinforce_lib.reinforce_pp, reinforce_lib.reinforce_pp_fields, "token"
    ),
    "cispo": Coefficient(grpo_lib.cispo, grpo_lib.outcome_fields, "token"),
    "simpo": Coefficient(preference.simpo, preference.pair_fields),
    "ipo": Coefficient(preference.ipo, preference.ref_pair_fields),
    "cpo": Coefficient(preference.cpo, preference.pair_fields),
    "orpo": Coefficient(preference.orpo, preference.pair_fields),
    "kto": Coefficient(preference.kto, preference.kto_fields),
    "distill": Coefficient(
        supervised.distill, supervised.distill_fields, "token"
    ),
}

METRIC_KEYS = metrics_lib.KEYS


def get(name: str) -> Coefficient:
  """The record of coefficient `name` (the error lists the valid ones)."""
  return registry.lookup(COEFFICIENTS, "coefficient", name)


def register(
    name: str, coefficient: Coefficient, *, replace: bool = False
) -> Coefficient:
  """Adds a method; see `ugrad.register_coefficient`."""
  if not isinstance(coefficient, Coefficient):
    raise TypeError(
        f"coefficient {name!r}: expected a Coefficient record, "
        f"got {type(coefficient).__name__}"
    )
  if coefficient.normalizer not in loss_lib.NORMALIZERS:
    raise errors.UserError(
        f"coefficient {name!r}: unknown normalizer "
        f"{coefficient.normalizer!r}; valid: "
        f"{', '.join(loss_lib.NORMALIZERS)}"
    )
  return registry.register(
      COEFFICIENTS, "coefficient", name, coefficient, replace=replace
  )


def default_hparams(name: str) -> dict:
  """The hyper-parameters of coefficient `name` and their defaults."""
  params = inspect.signature(get(name).fn).parameters.values()
  return {
      p.name: p.default
      for p in params
      if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


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
    raise errors.UserError(
        f"unknown hyper-parameter(s) {', '.join(unknown)} for coefficient "
        f"{name!r}; valid: {', '.join(full) or '(none)'}"
    )
  full.update(hparams or {})
  get(name).fields(**full)  # Validates the choices (estimator names, ...).
  return full


def required_fields(name: str, hparams: Optional[Mapping] = None) -> set:
  """The optional Rollout fields coefficient `name` needs with `hparams`.

  `tokens` and `completion_mask` are always present and not listed.
  `logp_old` is listed only where it is required (PPO); elsewhere it is
  used when present and the rollout is taken as on-policy otherwise.
  `values` is listed exactly when the method declares `value_targets`.

  Args:
    name: a key of `COEFFICIENTS`.
    hparams: hyper-parameter overrides (defaults fill the rest).

  Returns:
    A set of Rollout attribute names, e.g. {"rewards", "group_ids"}.
  """
  return set(get(name).fields(**bind_hparams(name, hparams)))


def make_coefficient(name: str, **hparams) -> Callable:
  """Binds hyper-parameters: returns `fn(rollout, logp) -> (coef, metrics)`.

  Raises:
    ValueError: as `bind_hparams`.
  """
  bind_hparams(name, hparams)
  return functools.partial(get(name).fn, **hparams)


def validate_rollout(
    name: str, rollout: rollout_lib.Rollout, hparams: Optional[Mapping] = None
) -> None:
  """Host-side check of a concrete rollout before the jitted step.

  Checks the needed fields are present with the right shapes and dtypes,
  every group has at least 2 non-empty rows, and every DPO pair has one +1
  and one -1 row.

  Raises:
    ValueError: naming the problem.
  """
  validation.check(rollout, name, required_fields(name, hparams))


__all__ = [
    "COEFFICIENTS",
    "Coefficient",
    "METRIC_KEYS",
    "bind_hparams",
    "get",
    "register",
    "default_hparams",
    "make_coefficient",
    "required_fields",
    "validate_rollout",
]
