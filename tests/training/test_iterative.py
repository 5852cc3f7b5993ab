"""Iterative RL: reference resets and reward models that follow the policy."""

import os

import jax
import numpy as np
import pytest

from experiments.configs import orm as orm_config
from tests.helpers import train_util
from ugrad.training import iterative
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import reward_data
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate

# Every test here needs the module's SFT and ORM runs (~1-2 min together).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


@pytest.fixture(scope="module")
def orm_dir(sft_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("orm"))
  c = orm_config.get_config()
  c.steps, c.model, c.init_from, c.quiet = 2, "tiny", sft_dir, True
  c.sampling.questions, c.sampling.group_size = 2, 2
  c.sampling.max_new_tokens = 32
  c.rm.eval_questions = 2
  c.eval_every = c.checkpoint_every = 2
  trainer_lib.train_reward_model(c, workdir)
  return workdir


def _iterative_grpo(sft_dir, orm_dir, steps=4, iterations=2):
  c = train_util.tiny("grpo", steps=steps, init_from=sft_dir)
  c.reward = "model"
  c.reward_model = orm_dir
  c.iterative.iterations = iterations
  c.iterative.rm_steps = 2
  c.iterative.replay = 0.1
  return c


def _metrics(workdir):
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return [
      {k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS}
      for r in rows
  ]


def _trainer(config, workdir):
  return trainer_lib.Trainer(
      config, workdir, hooks=iterative.hooks(config, workdir)
  )


@pytest.fixture(scope="module")
def run_dir(sft_dir, orm_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("iterative"))
  trainer = _trainer(_iterative_grpo(sft_dir, orm_dir), workdir)
  trainer.train()
  assert trainer.hooks[0].iteration == 1
  return workdir


def test_reward_model_continues_on_the_policy_of_each_iteration(
    run_dir, orm_dir
):
  it1 = iterative.iteration_dir(run_dir, 1)
  rm_dir = os.path.join(it1, "reward_model")
  chain = reward_data.run_chain(rm_dir)
  assert chain[0].init_from == it1  # samples the policy of iteration 1
  assert chain[0].rm.init_from == orm_dir and chain[0].rm.replay == 0.1
  assert chain[0].steps == 2
  # It trained: its parameters moved from the ORM it continued.
  _, before = runs.load_model(orm_dir, "scalar")
  _, after = runs.load_model(rm_dir, "scalar")
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
  assert any(jax.tree.leaves(moved))
  rows = _metrics(run_dir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  # Its evaluation is logged at the first step of iteration 1 only.
  assert "reward_model/orm_auc" in rows[2]
  assert not any("reward_model/orm_auc" in rows[i] for i in (0, 1, 3))
  assert not os.path.exists(iterative.iteration_dir(run_dir, 2))


def test_run_killed_at_an_iteration_boundary_resumes_identically(
    sft_dir, orm_dir, run_dir, tmp_path, monkeypatch
):
  # Killed after step 2's checkpoint, as iteration 1 begins and before its
  # reward model continued: the resumed run trains it on the policy of the
  # checkpoint and matches the uninterrupted run.
  workdir = str(tmp_path / "resumed")
  config = _iterative_grpo(sft_dir, orm_dir)

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  with monkeypatch.context() as m:
    m.setattr(iterative, "reward_models_of", killed)
    with pytest.raises(KeyboardInterrupt):
      _trainer(config, workdir).train()
  assert [r["step"] for r in _metrics(workdir)] == [1, 2]
  resumed = _trainer(_iterative_grpo(sft_dir, orm_dir), workdir)
  assert resumed.start_step == 2
  restored = jax.device_get(resumed.state["params"])
  resumed.train()
  assert _metrics(workdir) == _metrics(run_dir)
  # The reward model sampled the policy at the boundary.
  _, sampled = runs.load_model(iterative.iteration_dir(workdir, 1))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(sampled), restored)
  no_time = lambda d: _metrics(
      os.path.join(iterative.iteration_dir(d, 1), "reward_model")
  )
  assert no_time(workdir) == no_time(run_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=5), "cannot be split into 2 equal iterations"),
        (dict(ref_reset_every=1), "set ref_reset_every=0"),
    ],
)
def test_bad_iterative_settings_are_refused(sft_dir, orm_dir, change, message):
  config = _iterative_grpo(sft_dir, orm_dir)
  for key, value in change.items():
    setattr(config, key, value)
  with pytest.raises(ValueError, match=message):
    validate.check_config(config)
