"""Reward models: Math-Shepherd labels, ORM / PRM training and use."""

import math
import os
import types

import jax
import numpy as np
import pytest

from experiments.configs import orm as orm_config
from experiments.configs import prm as prm_config
from tests.helpers import train_util
from ugrad.sampling import layout
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import reward_data
from ugrad.training import reward_labels
from ugrad import rewards as rewards_lib
from ugrad.training import runs
from ugrad import sources as sources_lib
from ugrad import tasks as tasks_lib
from ugrad.training import trainer as trainer_lib


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _tiny_rm(module, init_from: str, steps: int = 2):
  c = module.get_config()
  c.steps = steps
  c.model = "tiny"
  c.init_from = init_from
  c.sampling.questions = 2
  c.sampling.group_size = 2
  c.sampling.max_new_tokens = 32
  c.rm.rollouts = 2
  c.rm.prefix_batch = 16
  c.rm.eval_questions = 2  # the training batch's shape: no new compile
  c.eval_every = steps
  c.checkpoint_every = steps  # one save: the forced last one
  c.quiet = True
  return c


# --- Math-Shepherd labels -----------------------------------------------------


class _ScriptedContinuations:
  """A fake sampler: the continuations of a prefix are looked up by its
  text after the prompt."""

  def __init__(self, tok, prompt: str, script: dict, new_tokens: int):
    self.tok, self.prompt, self.script = tok, prompt, script
    self.new_tokens = new_tokens
    self.seen = []

  def __call__(self, tokens, mask, key):
    del key
    rows, conts = [], []
    for row, m in zip(tokens, mask):
      text = self.tok.decode(row[m > 0])
      assert text.startswith(self.prompt)
      head = text[len(self.prompt) :]
      self.seen.append(head)
      for cont in self.script[head]:
        rows.append(row[m > 0].tolist())
        conts.append(tasks_lib.encode_completion(self.tok, cont))
    packed = layout.pack(
        rows, conts, tokens.shape[1], self.new_tokens, self.tok.pad_id
    )
    return types.SimpleNamespace(
        tokens=packed["tokens"], completion_mask=packed["completion_mask"]
    )


def test_shepherd_hard_and_soft_labels():
  task = tasks_lib.ArithmeticTask(num_operands=3, digits=1, n_train=4)
  tok = task.tokenizer
  ex = tasks_lib.Example("1+2+3=", "1+2=3\n3+3=6", "6")
  wrong = "1+2=4\n4+3=7\n#### 7"
  right = "1+2=3\n3+3=6\n#### 6"
  prompt = task.prompt(ex)
  arrays = layout.pack(
      [tasks_lib.encode_prompt(tok, prompt)] * 2,
      [tasks_lib.encode_completion(tok, t) for t in (wrong, right)],
      10,
      24,
      tok.pad_id,
  )
  batch = sources_lib.Batch(
      sources_lib.Rollout(**arrays), [ex, ex], [wrong, right], {}
  )
  mask = rewards_lib.step_end_mask(rewards_lib.RewardContext(task), batch)
  # Completions that claim an answer regardless of the prefix: the rule
  # reward reads the first "####", so only prefixes without one can flip.
  script = {
      "1+2=4": ["\n#### 6", "\n#### 7", "\n4+3=7\n#### 7"],
      "1+2=4\n4+3=7": ["\n#### 6", "\n#### 7", "\n#### 7"],
      "1+2=4\n4+3=7\n#### 7": ["", "", "\n#### 6"],
      "1+2=3": ["\n3+3=6\n#### 6", "\n#### 6", "\n#### 5"],
      "1+2=3\n3+3=6": ["\n#### 6"] * 3,
      "1+2=3\n3+3=6\n#### 6": [""] * 3,
  }
  fake = _ScriptedContinuations(tok, prompt, script, 24)
  soft = reward_labels.shepherd_fractions(
      task, batch, mask, fake, 3, chunk=4, key=jax.random.key(0)
  )
  rows, cols = np.nonzero(mask)
  assert rows.tolist() == [0, 0, 0, 1, 1, 1]
  np.testing.assert_allclose(
      soft[rows, cols], [1 / 3, 1 / 3, 0, 2 / 3, 1, 1], rtol=1e-6
  )
  assert (soft[mask == 0] == 0).all()
  np.testing.assert_array_equal(
      (soft[rows, cols] > 0), [True, True, False, True, True, True]
  )
  # The ground-truth control: every step of the wrong sample is wrong.
  truth = reward_labels.true_step_labels(task, batch)
  np.testing.assert_array_equal(truth["step_mask"], mask)
  np.testing.assert_array_equal(
      truth["step_rewards"][rows, cols], [0, 0, 0, 1, 1, 1]
  )
  # 6 prefixes in chunks of 4: the second chunk is padded with a repeat.
  assert len(fake.seen) == 8 and fake.seen[6:] == [fake.seen[4]] * 2


# --- training, saving, scoring ------------------------------------------------


def _rows(workdir):
  return metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))


@pytest.mark.slow
def test_orm_trains_saves_scores_and_resumes(sft_dir, tmp_path):
  config = _tiny_rm(orm_config, sft_dir)
  result = trainer_lib.train_reward_model(config, str(tmp_path))
  rows = _rows(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2]
  assert all(math.isfinite(r["loss"]) for r in rows)
  # A zero head scores 0: the first loss is log 2 whatever the labels.
  assert rows[0]["loss"] == pytest.approx(math.log(2), rel=1e-5)
  assert "orm_acc" in rows[-1] and "orm_auc" in result
  scorer = runs.reward_model_scorer(str(tmp_path))
  tokens = np.ones((2, 12), np.int32)
  assert scorer(tokens, np.ones_like(tokens)).shape == (2, 12)
  # A new trainer on the workdir resumes from the last checkpoint.
  resumed = trainer_lib.Trainer(_tiny_rm(orm_config, sft_dir), str(tmp_path))
  assert resumed.start_step == 2
  _, saved = runs.load_model(str(tmp_path), "scalar")
  jax.tree.map(np.testing.assert_array_equal, resumed.state["params"], saved)


@pytest.mark.slow
def test_prm_trains_and_drives_process_grpo(sft_dir, tmp_path):
  prm_dir = str(tmp_path / "prm")
  trainer_lib.train_reward_model(_tiny_rm(prm_config, sft_dir), prm_dir)
  rows = _rows(prm_dir)
  assert [r["step"] for r in rows] == [1, 2]
  for key in (
      "step_acc",
      "step_auc",
      "solution_acc",
      "label_mean",
      "label_truth_agreement",
  ):
    assert key in rows[-1], key
  rl = train_util.tiny("grpo_process", init_from=sft_dir)
  rl.reward = "process"
  rl.process_reward_model = prm_dir
  trainer_lib.Trainer(rl, str(tmp_path / "rl")).train()
  rl_rows = _rows(str(tmp_path / "rl"))
  assert [r["step"] for r in rl_rows] == [1, 2]
  assert all(math.isfinite(r["loss"]) for r in rl_rows)


# Slow for its fixture (the module's SFT run).
@pytest.mark.slow
def test_bad_settings_are_refused(sft_dir, tmp_path):
  config = _tiny_rm(prm_config, sft_dir)
  config.rm.label = "fuzzy"
  with pytest.raises(ValueError, match="hard, soft, ground_truth"):
    trainer_lib.Trainer(config, str(tmp_path))
  config = _tiny_rm(orm_config, sft_dir)
  config.rm.kind = "vrm"
  with pytest.raises(ValueError, match="orm, prm"):
    trainer_lib.Trainer(config, str(tmp_path))


# --- continued training with replay (iterative RL) ----------------------------


@pytest.fixture(scope="module")
def base_orm(sft_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("orm"))
  trainer_lib.train_reward_model(_tiny_rm(orm_config, sft_dir), workdir)
  return workdir


def _continued(base: str, sft_dir: str, replay: float):
  config = _tiny_rm(orm_config, sft_dir)
  config.rm.init_from = base
  config.rm.replay = replay
  return config


@pytest.mark.slow
def test_continued_reward_model_starts_from_the_saved_one_and_replays(
    base_orm, sft_dir, tmp_path
):
  config = _continued(base_orm, sft_dir, replay=0.5)
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  _, saved = runs.load_model(base_orm, "scalar")
  learner = trainer.learner
  jax.tree.map(np.testing.assert_array_equal, learner.init_params, saved)
  # Draws continue after the base run's 2 steps.
  assert learner.data_offset == 2
  history = reward_data.history(base_orm)
  assert len(history["tokens"]) == 2 * 4  # 2 steps x 2 questions x 2 samples
  trainer.train()
  fresh = reward_data.history(str(tmp_path))
  assert len(fresh["tokens"]) == 2 * 8  # the chain: both runs' fresh rows
  # The continued run's own rows are new draws, not the base run's again.
  assert not np.array_equal(fresh["tokens"][:8], fresh["tokens"][8:])
  rows = {k: v[8:12] for k, v in fresh.items()}
  mixed = learner._with_replay(0, rows)
  n = reward_data.replay_rows(4, 0.5)
  assert n == 4 and len(mixed["tokens"]) == 4 + n
  for key in rows:
    np.testing.assert_array_equal(mixed[key][:4], rows[key])
  for row in mixed["tokens"][4:]:
    assert any(np.array_equal(row, h) for h in history["tokens"])
  again = learner._with_replay(0, rows)
  np.testing.assert_array_equal(again["tokens"], mixed["tokens"])
  assert [c.rm.init_from for c in reward_data.run_chain(str(tmp_path))] == [
      base_orm,
      "",
  ]


# Slow for its fixtures (the module's SFT and ORM runs).
@pytest.mark.slow
def test_replay_share_and_bad_continuations(base_orm, sft_dir, tmp_path):
  assert reward_data.replay_rows(128, 0.1) == 14  # 14 / 142 = 9.9%
  assert reward_data.replay_rows(128, 0.0) == 0
  config = _tiny_rm(orm_config, sft_dir)
  config.rm.replay = 0.1
  with pytest.raises(ValueError, match="set config.rm.init_from"):
    trainer_lib.Trainer(config, str(tmp_path / "a"))
  config = _continued(base_orm, sft_dir, replay=0.1)
  config.rm = prm_config.get_config().rm
  config.rm.init_from = base_orm
  with pytest.raises(ValueError, match="of kind 'orm', not 'prm'"):
    trainer_lib.Trainer(config, str(tmp_path / "b"))
  config = _continued(str(tmp_path / "missing"), sft_dir, replay=0.1)
  with pytest.raises(FileNotFoundError, match="no finished reward model"):
    trainer_lib.Trainer(config, str(tmp_path / "c"))
