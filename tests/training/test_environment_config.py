"""The environment family in configs: names, registration, start-up checks,
and what it provides to the coefficients."""

import pytest

import ugrad
from tests.helpers import train_util
from ugrad import environments
from ugrad import errors
from ugrad.training import validate


def test_grpo_tools_validates_and_provides_turn_rewards():
  config = train_util.tiny("grpo_tools", init_from="sft")
  validate.check_config(config)
  assert {"step_rewards", "step_mask"} <= validate.provided_fields(config)
  # grpo_process reads them: an environment's turn rewards suffice.
  config.coef = train_util.tiny("grpo_process", init_from="sft").coef
  config.reward = "rule"
  validate.check_config(config)
  config.environment = ""
  with pytest.raises(errors.UserError, match="step_rewards"):
    validate.check_config(config)


def test_environment_needs_the_online_source_and_a_known_name():
  config = train_util.tiny("grpo_tools", init_from="sft")
  config.environment = "calculatorr"
  with pytest.raises(errors.UserError, match="valid: calculator"):
    validate.check_config(config)
  config = train_util.tiny("grpo_tools", init_from="sft")
  config.source = "frozen_policy"
  with pytest.raises(errors.UserError, match="'online' source"):
    validate.check_config(config)
  config = train_util.tiny("grpo_tools", init_from="sft")
  config.episodes.max_turns = 0
  with pytest.raises(errors.UserError, match="max_turns"):
    validate.check_config(config)


def test_register_environment_from_outside():
  class Echo:
    stop_strings = (")",)

    def __init__(self, task, **unused):
      del task, unused

    def open(self, example):
      del example
      return self

    def step(self, text, ids):
      del ids
      return environments.Turn(text[-1:])

  try:
    assert ugrad.register_environment("echo_test", Echo) is Echo
    env = environments.make("echo_test", None)
    assert env.open(None).step("ab)", [1]).observation == ")"
    with pytest.raises(errors.UserError, match="already registered"):
      ugrad.register_environment("echo_test", lambda task: None)
    with pytest.raises(TypeError, match="factory"):
      ugrad.register_environment("bad", 3, replace=True)
  finally:
    environments.ENVIRONMENTS.pop("echo_test", None)


def test_the_sft_warm_start_of_a_tools_run_has_no_environment():
  from experiments.configs import sft  # pylint: disable=import-outside-toplevel

  warm = sft.warm_start(train_util.tiny("grpo_tools"))
  assert warm.environment == "" and warm.task_kwargs.tools
  validate.check_config(warm)
