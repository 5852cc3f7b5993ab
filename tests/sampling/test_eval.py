"""ugrad.sampling.evaluation: pass@k, maj@k and greedy accuracy of a sampled
policy.

The policy is a tiny untrained model; tasks whose reward is known (every
completion right, none right, right by its first character) give the
statistics something to be checked against.
"""

import json
import string

from flax import nnx
import pytest

from ugrad.training import build
from ugrad.sampling import evaluation as ev
from ugrad import models
from ugrad import tasks as tasks_lib
from ugrad.tasks import arithmetic

# One shape for every sampler call below, so the sampler compiles once per
# (samples, rows) pair.
N_SAMPLES = 4
QUESTIONS = 6
BATCH_QUESTIONS = 4
MAX_NEW = 12


@pytest.fixture(scope="module")
def policy():
  """(graphdef, params) of the tiny untrained policy of the embedded task."""
  vocab = arithmetic.ArithmeticTask(n_train=32, n_test=16).tokenizer.vocab_size
  model = models.Transformer(models.preset("tiny", vocab), rngs=nnx.Rngs(0))
  return nnx.split(model, nnx.Param)


class _KnownRewardTask(arithmetic.ArithmeticTask):
  """The embedded task's questions under a reward fixed by the test."""

  def __init__(self, reward_fn):
    super().__init__(n_train=32, n_test=16)
    self.reward_fn = reward_fn

  def reward(self, example, completion):
    del example
    return self.reward_fn(completion)


def _first_char(text):
  return text[:1]


# Half of the characters a completion can start with count as right.
_RIGHT_FIRST = set(string.digits[::2] + "+=#\n")


def _sample_eval(task, policy, **kwargs):
  graphdef, params = policy
  kwargs = dict(
      dict(
          num_questions=QUESTIONS,
          n_samples=N_SAMPLES,
          ks=[1, 2, 4],
          batch_questions=BATCH_QUESTIONS,
          answer_fn=_first_char,
          equivalent=None,
      ),
      **kwargs
  )
  return ev.sample_eval(
      task,
      graphdef,
      params,
      prompt_len=build.prompt_length(task),
      max_new_tokens=MAX_NEW,
      **kwargs
  )


@pytest.mark.parametrize("reward", [1.0, 0.0])
def test_sample_eval_when_every_or_no_completion_is_right(policy, reward):
  out = _sample_eval(_KnownRewardTask(lambda text: reward), policy)
  assert out["num_questions"] == QUESTIONS
  assert out["samples_per_question"] == [N_SAMPLES, N_SAMPLES]
  for name in (
      "pass@1",
      "pass@2",
      "pass@4",
      "maj@1",
      "maj@2",
      "maj@4",
      "greedy_acc",
  ):
    assert out[name] == reward, name
    assert out[name + "_ci"] == [reward, reward], name
  assert out["correct_per_question"] == [int(reward) * N_SAMPLES] * QUESTIONS


def test_sample_eval_statistics_agree_with_the_sample_counts(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  out = _sample_eval(task, policy)
  counts = out["correct_per_question"]
  assert len(counts) == QUESTIONS
  assert out["pass@1"] == pytest.approx(sum(counts) / (N_SAMPLES * QUESTIONS))
  assert out["pass@4"] == pytest.approx(sum(c > 0 for c in counts) / QUESTIONS)
  # Samples that share a first character share the reward, so a vote of one
  # is exactly one sample's correctness.
  assert out["maj@1"] == pytest.approx(out["pass@1"])
  # Not degenerate: some samples right, some questions not always right.
  assert 0 < out["pass@1"] < out["pass@2"] < out["pass@4"]
  for name in ("pass@1", "pass@2", "pass@4", "maj@2", "maj@4"):
    low, high = out[name + "_ci"]
    assert 0 <= low <= out[name] <= high <= 1, name


def test_sample_eval_is_deterministic_given_the_seed(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  first = _sample_eval(task, policy, seed=3)
  assert _sample_eval(task, policy, seed=3) == first
  assert (
      _sample_eval(task, policy, seed=4)["correct_per_question"]
      != first["correct_per_question"]
  )


def test_sample_eval_padding_is_sampled_but_not_scored(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  six = _sample_eval(task, policy)  # a full batch, then 2 of 4 padded
  four = _sample_eval(task, policy, num_questions=4)  # the same first call
  assert four["num_questions"] == 4
  assert four["correct_per_question"] == six["correct_per_question"][:4]


def test_sample_eval_rejects_bad_settings(policy):
  task = _KnownRewardTask(lambda text: 1.0)
  with pytest.raises(ValueError, match=r"every k must be in \[1, n_samples"):
    _sample_eval(task, policy, ks=[1, 8])
  with pytest.raises(ValueError, match="n_samples must be >= 1"):
    _sample_eval(task, policy, n_samples=0)
  with pytest.raises(ValueError, match="ks is empty"):
    _sample_eval(task, policy, ks=[])


def test_answer_functions_of_the_tasks(tmp_path):
  read, same = ev.answer_functions(
      tasks_lib.ArithmeticTask(n_train=8, n_test=8)
  )
  assert read("1+2=3\n#### 3") == 3 and read("1+2=3") is None
  assert same(3, 3) and not same(3, 4)
  path = tmp_path / "gsm8k.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "#### 1000"}) + "\n")
  read, same = ev.answer_functions(tasks_lib.gsm8k_task(test_path=str(path)))
  assert read("so\n#### 1,000\nmore") == "1,000"
  assert read("no answer") is None and read("#### ") is None
  assert same("1,000", "1000") and not same("1000", "999")
  assert same("\\unparsable{", "\\unparsable{")  # equal strings vote together
  with pytest.raises(ValueError, match="known tasks: ArithmeticTask"):
    ev.answer_functions(object())
