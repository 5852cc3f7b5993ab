"""Profiling chosen steps: the trace exists, covers only those steps, and
its operations are credited to the jitted functions they ran in."""

import os

import pytest

from experiments.perf import op_profile
from tests.helpers import train_util
from ugrad.runtime import profiling
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate


def test_parse_steps():
  assert profiling.parse_steps("") is None
  assert profiling.parse_steps("3:5") == (3, 5)
  for bad in ("5:3", "4:4", "3", "a:b", "-1:2"):
    with pytest.raises(ValueError, match="profile_steps must be 'START:STOP'"):
      profiling.parse_steps(bad)


def test_bad_profile_steps_is_refused_at_start_up():
  config = train_util.tiny("grpo")
  config.profile_steps = "2:1"
  with pytest.raises(ValueError, match="got '2:1'"):
    validate.check_settings(config)


def test_profiled_steps_give_operation_times(tmp_path):
  config = train_util.tiny("sft", steps=4)
  config.profile_steps = "1:3"
  trainer_lib.Trainer(config, str(tmp_path)).train()
  trace = profiling.latest_trace(str(tmp_path / profiling.PROFILE_DIR))
  ops = profiling.op_times(trace)
  functions = {op.function for op in ops}
  assert "update" in functions, functions
  # The update ran twice in the window (steps 1 and 2), once per step.
  update_ops = [op for op in ops if op.function == "update"]
  assert max(op.count for op in update_ops) == 2
  assert any(profiling.category(op.name) == "matmul" for op in update_ops)
  assert op_profile.profiled_steps(str(tmp_path)) == 2
  text = op_profile.table(ops, 2, top=5)
  assert "update" in text and "matmul" in text


def test_no_trace_without_profile_steps(tmp_path):
  trainer_lib.Trainer(train_util.tiny("sft", steps=1), str(tmp_path)).train()
  assert not os.path.exists(tmp_path / profiling.PROFILE_DIR)
  with pytest.raises(FileNotFoundError, match="no profiler trace"):
    profiling.latest_trace(str(tmp_path / profiling.PROFILE_DIR))


def test_a_config_stored_before_profile_steps_still_trains(tmp_path):
  # A reward model that iterative RL continues comes from its stored
  # run_config.json, which a run from before the key existed lacks.
  config = train_util.tiny("sft", steps=1)
  del config["profile_steps"]
  trainer_lib.Trainer(config, str(tmp_path)).train()
  assert not os.path.exists(tmp_path / profiling.PROFILE_DIR)
