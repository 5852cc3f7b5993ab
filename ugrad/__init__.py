"""ugrad: every post-training method is one gradient coefficient.

The public API for methods written outside the package: a coefficient, a
reward, a data source or an environment is registered under a name, after
which configs select it like a built-in one (`config.coef =
coef("my_method")`, `config.reward = "my_reward"`, `config.source =
"my_source"`, `config.environment = "my_env"`). See
`examples/custom_method/` and CONTRIBUTING.md.
"""

from typing import Callable, Iterable, Optional

from ugrad import coefficients as _coefficients
from ugrad import environments as _environments
from ugrad import rewards as _rewards
from ugrad import sources as _sources
from ugrad.coefficients import Coefficient
from ugrad.coefficients.metrics import coefficient_metrics
from ugrad.loss import unified_loss
from ugrad.rewards import Reward
from ugrad.rewards import RewardContext
from ugrad.rollout import Rollout


def _no_fields(**unused) -> set:
  del unused
  return set()


def register_coefficient(
    name: str,
    fn: Callable,
    *,
    fields: Callable[..., set] = _no_fields,
    normalizer: str = "sequence",
    value_targets: Optional[Callable] = None,
    replace: bool = False,
) -> Coefficient:
  """Adds a gradient coefficient (a method) under `name`.

  Args:
    name: the name configs use (`config.coef.name`).
    fn: `(rollout, logp, **hparams) -> (coef [B, T], metrics)`, pure and
      jit-able; its keyword-only arguments (with defaults) are the method's
      hyper-parameters. Build `metrics` with `ugrad.coefficient_metrics` so
      the run logs the same keys for every method.
    fields: `(**hparams) -> set` of the optional Rollout fields `fn` reads
      ("rewards", "group_ids", "logp_ref", ...); the start-up check compares
      them with what the source and reward provide.
    normalizer: N of the unified loss: "sequence", "token" or "constant".
    value_targets: `(rollout, **hparams) -> [B, T]` when the method trains a
      critic (it then reads `values`).
    replace: allow replacing an existing method.

  Returns:
    The registered `Coefficient` record.
  """
  return _coefficients.register(
      name, Coefficient(fn, fields, normalizer, value_targets), replace=replace
  )


def register_reward(
    name: str,
    fn: Callable,
    *,
    fields: Iterable[str] = ("rewards",),
    replace: bool = False,
) -> Reward:
  """Adds a reward function under `name` (usable in weighted specs too).

  Args:
    name: the name reward specs use ("my_reward", "rule:1,my_reward:0.5").
    fn: `(ctx: RewardContext, batch) -> {field: array}`: outcome rewards
      {"rewards": [B]} or process rewards {"step_rewards", "step_mask"}
      ([B, T]); `batch.examples` and `batch.texts` hold each row's problem
      and decoded completion.
    fields: the Rollout fields `fn` fills.
    replace: allow replacing an existing reward.

  Returns:
    The registered `Reward` record.
  """
  return _rewards.register(name, Reward(fn, frozenset(fields)), replace=replace)


def register_source(
    name: str, source_cls: type, *, replace: bool = False
) -> type:
  """Adds a data source class under `name` (`config.source`).

  The class declares `samples` (draws from the policy), `frozen` (from a
  fixed policy), `provides(pairs) -> set` of Rollout fields, and
  `draw(params, step, score) -> sources.Batch`; see `ugrad.sources`.
  """
  return _sources.register(name, source_cls, replace=replace)


def register_environment(
    name: str, factory: Callable, *, replace: bool = False
) -> Callable:
  """Adds an environment under `name` (`config.environment`).

  Args:
    name: the name configs use.
    factory: `(task, **kwargs) -> Environment`: an object with
      `stop_strings` (texts that end a policy turn) and `open(example) ->
      Episode`, whose `step(text, ids) -> ugrad.environments.Turn` answers
      each turn (observation, reward, done); see `ugrad.environments`.
    replace: allow replacing an existing environment.

  Returns:
    `factory`.
  """
  return _environments.register(name, factory, replace=replace)


__all__ = [
    "Coefficient",
    "Reward",
    "RewardContext",
    "Rollout",
    "coefficient_metrics",
    "register_coefficient",
    "register_environment",
    "register_reward",
    "register_source",
    "unified_loss",
]
