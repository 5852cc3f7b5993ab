"""The run kinds implement the `Learner` protocol, and nothing reaches into
the trainer: learners get a `RunContext`, hooks return a `HookResult`."""

import inspect

import pytest

from ugrad.training import learner as learner_lib
from ugrad.training import policy_learner
from ugrad.training import reward_models

_LEARNERS = (policy_learner.PolicyLearner, reward_models.RewardModelLearner)


def _methods(cls) -> dict:
  return {
      name: inspect.signature(fn)
      for name, fn in vars(cls).items()
      if not name.startswith("_") and inspect.isfunction(fn)
  }


@pytest.mark.parametrize("cls", _LEARNERS, ids=lambda c: c.__name__)
def test_learner_has_every_method_of_the_protocol_with_its_arguments(cls):
  protocol = _methods(learner_lib.Learner)
  assert set(protocol) <= set(dir(cls))
  for name, signature in protocol.items():
    got = inspect.signature(getattr(cls, name))
    assert list(got.parameters) == list(signature.parameters), name
  assert "chunk" in learner_lib.Learner.__annotations__
  assert "chunk" in dir(cls) or "chunk" in cls.__annotations__


@pytest.mark.parametrize("cls", _LEARNERS, ids=lambda c: c.__name__)
def test_learner_is_built_from_the_run_context(cls):
  assert list(inspect.signature(cls).parameters) == ["context"]


def test_hook_result_defaults_change_nothing():
  result = learner_lib.HookResult()
  assert result.metrics == {} and result.reward_models is None
