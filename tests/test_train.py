"""The trainer end to end on the embedded task, at toy sizes."""

import json
import math
import os

import jax
import numpy as np
import pytest

from tests import train_util
from ugrad import gradlog
from ugrad import metrics as metrics_lib
from ugrad import train


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  train.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _metrics(workdir):
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS}
          for r in rows]


@pytest.mark.parametrize("name", train_util.CONFIGS)
def test_every_config_runs(name, sft_dir, tmp_path):
  config = train_util.tiny(name, init_from=sft_dir if name != "sft" else "")
  train.Trainer(config, str(tmp_path)).train()
  rows = _metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2]
  assert all(math.isfinite(r["loss"]) for r in rows)
  log = gradlog.verify(str(tmp_path / "gradient_log.jsonl"))
  assert log.ok and log.records == 2 * config.ppo_epochs * config.minibatches
  assert os.path.isdir(tmp_path / train.POLICY_DIR)


def test_same_seed_same_metrics_and_resume_continues(sft_dir, tmp_path):
  full = train_util.tiny("grpo", steps=3, init_from=sft_dir)
  train.Trainer(full, str(tmp_path / "a")).train()
  train.Trainer(full, str(tmp_path / "b")).train()
  assert _metrics(str(tmp_path / "a")) == _metrics(str(tmp_path / "b"))
  # Two steps, then a new trainer on the same workdir finishes the third.
  part = train_util.tiny("grpo", steps=2, init_from=sft_dir)
  train.Trainer(part, str(tmp_path / "c")).train()
  resumed = train.Trainer(full, str(tmp_path / "c"))
  assert resumed.start_step == 2
  resumed.train()
  assert _metrics(str(tmp_path / "c")) == _metrics(str(tmp_path / "a"))
  assert gradlog.verify(str(tmp_path / "c" / "gradient_log.jsonl")).ok


def test_warm_start_trains_sft_once(tmp_path):
  config = train_util.tiny("online_rft")
  trainer = train.Trainer(config, str(tmp_path))
  assert config.init_from == str(tmp_path / "sft")
  assert len(_metrics(str(tmp_path / "sft"))) == config.warm_start.steps
  mtime = os.path.getmtime(tmp_path / "sft" / "metrics.jsonl")
  train.Trainer(train_util.tiny("online_rft"), str(tmp_path))
  assert os.path.getmtime(tmp_path / "sft" / "metrics.jsonl") == mtime
  del trainer


def test_nan_loss_stops_with_step_and_checkpoint(sft_dir, tmp_path):
  config = train_util.tiny("online_rft", steps=4, init_from=sft_dir)
  trainer = train.Trainer(config, str(tmp_path))
  real_update = trainer.update
  calls = []

  def poisoned(params, opt_state, batch):
    calls.append(1)
    params, opt_state, metrics = real_update(params, opt_state, batch)
    if len(calls) == 3:
      metrics = dict(metrics, loss=metrics["loss"] * np.nan)
    return params, opt_state, metrics

  trainer.update = poisoned
  with pytest.raises(FloatingPointError, match=r"step 3.*step 2 in .*resume"):
    trainer.train()
  assert trainer.checkpointer.all_steps()[-1] == 2


@pytest.mark.parametrize("change, message", [
    (dict(source="web"), "valid sources: dataset, frozen_policy, online"),
    (dict(reward="rules"), "valid rewards: .*rule"),
    (dict(task="gsm9k"), "valid tasks"),
    (dict(model="big"), "valid: embedded"),
    (dict(normalizer="tokens"), "valid: sequence, token, constant"),
    (dict(source="dataset"), "pair_ids.*sampling.pairs=True"),
])
def test_bad_config_is_refused_before_work(change, message):
  config = train_util.tiny("dpo")
  for key, value in change.items():
    config[key] = value
  with pytest.raises(ValueError, match=message):
    train.validate(config)


def test_unknown_coefficient_lists_valid_ones():
  config = train_util.tiny("grpo")
  config.coef.name = "grpoo"
  with pytest.raises(ValueError, match="valid: sft, rft, dpo"):
    train.validate(config)


def test_group_method_needs_groups():
  config = train_util.tiny("grpo")
  config.sampling.group_size = 1
  with pytest.raises(ValueError, match="group_size must be >= 2"):
    train.validate(config)
