"""The online source on episodes: questions passed to the environment, turn
rewards kept as step rewards, failed episodes zeroed, episode metrics."""

import numpy as np
import pytest

from tests import test_sources as ts
from ugrad import rewards as rewards_lib
from ugrad import sampling
from ugrad import sources
from ugrad import tasks as tasks_lib


class EpisodicScripted(ts.ScriptedSampler):
  """Gold completions as if they were episodes: a turn reward of 0.5 at
  each row's second completion token; row 1 of every call failed."""

  episodic = True

  def __call__(self, params, prompts, key, examples=None):
    self.examples = examples
    out = super().__call__(params, prompts, key)
    rows, width = out.tokens.shape
    step_rewards = np.zeros((rows, width), np.float32)
    step_rewards[:, ts.P + 1] = 0.5
    failed = np.zeros(rows, bool)
    failed[1] = True
    return sampling.EpisodeCompletions(
        out.tokens,
        out.attention_mask,
        out.completion_mask,
        out.logp,
        out.texts,
        step_rewards=step_rewards,
        step_mask=(step_rewards > 0).astype(np.float32),
        turns=np.full(rows, 2),
        calls=np.ones(rows, np.int32),
        invalid_calls=np.zeros(rows, np.int32),
        truncated=np.zeros(rows, bool),
        failed=failed,
        prompt_lengths=out.attention_mask[:, : ts.P].sum(1),
    )


@pytest.fixture(name="task", scope="module")
def task_fixture():
  return tasks_lib.ArithmeticTask(
      num_operands=3, digits=1, n_train=64, n_test=8, seed=0
  )


def _draw(task, reward):
  sampler = EpisodicScripted(task, lambda call, i, q: (ts.RIGHT, ts.RIGHT))
  source = sources.OnlineSource(
      task,
      sampler=sampler,
      questions=2,
      group_size=ts.G,
      prompt_len=ts.P,
      seed=0,
  )
  score = rewards_lib.make_scorer(reward, rewards_lib.RewardContext(task))
  return source.draw(None, 0, score), sampler


def test_turn_rewards_failed_rows_and_metrics(task):
  batch, sampler = _draw(task, "rule")
  assert [ex.question for ex in sampler.examples] == [
      ex.question for ex in batch.examples[:: ts.G]
  ]
  r = batch.rollout
  # Gold completions score 1, except the failed row: 0, turn reward too.
  np.testing.assert_array_equal(r.rewards, [1.0, 0.0, 1.0, 1.0])
  np.testing.assert_array_equal(r.step_rewards[:, ts.P + 1], [0.5, 0, 0.5, 0.5])
  assert r.step_mask[:, ts.P + 1].all() and r.step_mask.sum() == 4
  assert batch.metrics["episode_tool_calls"] == 1.0
  assert batch.metrics["episode_failed_frac"] == 0.25
  assert "zero_signal_group_frac" in batch.metrics


def test_a_process_reward_adds_to_the_turn_rewards(task):
  alone, _ = _draw(task, "ground_truth_process")
  both, _ = _draw(task, "rule,ground_truth_process")
  env = np.zeros_like(both.rollout.step_rewards)
  env[[0, 2, 3], ts.P + 1] = 0.5
  truth = np.asarray(alone.rollout.step_rewards) - env
  assert truth.sum() > 0  # the step labels fill other tokens
  np.testing.assert_allclose(both.rollout.step_rewards, truth + env)
  assert both.rollout.step_mask[:, ts.P + 1][[0, 2, 3]].all()
