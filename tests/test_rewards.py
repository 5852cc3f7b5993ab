"""Reward functions on hand-written completions of the embedded task."""

import numpy as np
import pytest

from tests.helpers import bpe_util

from ugrad import errors
from ugrad import rewards as rewards_lib
from ugrad import rollout as rollout_lib
from ugrad import sources
from ugrad import tasks as tasks_lib
from ugrad.sampling import layout

P, N = 12, 40


class BpeTokenizer:
  """A byte-level BPE in the Tokenizer protocol: tokens span several chars."""

  def __init__(self):
    tok = bpe_util.train_bpe(
        ["48+27=75\n75-19=56\n#### 56", "12-34=-22"] * 20,
        300,
        ("<pad>", "</s>"),
    )
    self._tok = tok
    self.vocab_size = tok.get_vocab_size()
    self.pad_id = tok.token_to_id("<pad>")
    self.bos_id = None
    self.eos_id = tok.token_to_id("</s>")

  def encode(self, text):
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids):
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def _task(tokenizer=None):
  return tasks_lib.ArithmeticTask(
      num_operands=3,
      digits=(1, 2),
      n_train=16,
      n_test=4,
      seed=0,
      tokenizer=tokenizer,
  )


@pytest.fixture(scope="module")
def task():
  return _task()


def _texts(ex):
  """Completions of `ex` with known rule rewards and step labels."""
  first, second = ex.solution.split("\n")
  wrong = str(int(ex.answer) + 1)
  return [
      # (text, rule reward, step labels under the "prefix" rule)
      (f"{first}\n{second}\n#### {ex.answer}", 1.0, [1, 1, 1]),
      (f"{first}\n{second}\n#### {wrong}", 0.0, [1, 1, 0]),
      # Spaces around steps and a blank line: steps end at visible chars.
      (f"  {first}  \n\n{second} \n####  {ex.answer} \n", 1.0, [1, 1, 1]),
      # A wrong first step: the right answer, but every step is wrong.
      (f"{first}1\n{second}\n#### {ex.answer}", 1.0, [0, 0, 0]),
      (f"{first}", 0.0, [1]),
      ("", 0.0, []),
  ]


def _batch(task, ex_index=(0, 3)):
  """One row per (example, text) with `texts` as the completions."""
  tok = task.tokenizer
  examples, texts, rule, labels = [], [], [], []
  for i in ex_index:
    ex = task.examples("train")[i]
    for text, reward, steps in _texts(ex):
      examples.append(ex)
      texts.append(text)
      rule.append(reward)
      labels.append(steps)
  prompts = [tasks_lib.encode_prompt(tok, task.prompt(ex)) for ex in examples]
  completions = [
      tasks_lib.encode_completion(tok, t) if t else [] for t in texts
  ]
  arrays = layout.pack(prompts, completions, P, N, tok.pad_id)
  batch = sources.Batch(rollout_lib.Rollout(**arrays), examples, texts, {})
  return batch, np.asarray(rule, np.float32), labels


def _score(spec, task, batch, **models_):
  ctx = rewards_lib.RewardContext(task, **models_)
  return rewards_lib.make_scorer(spec, ctx)(batch).rollout


def test_rule_rewards_correct_incorrect_and_blank_rows(task):
  batch, rule, _ = _batch(task)
  r = _score("rule", task, batch)
  np.testing.assert_array_equal(r.rewards, rule)
  assert r.rewards.dtype == np.float32
  assert r.step_rewards is None and r.step_mask is None


def test_none_reward_fills_nothing(task):
  batch, _, _ = _batch(task)
  r = _score("none", task, batch)
  assert r.rewards is None and r.step_rewards is None


def _check_step_ends(tok, batch, step_mask):
  """Each 1 of `step_mask` is on the token holding a line's last visible char.

  Checked on the decoded completion only, for any tokenizer: the token has a
  visible character, nothing visible follows it on its line, and there is
  one such token per non-blank line.
  """
  r = batch.rollout
  assert not (step_mask * (1 - r.completion_mask)).any()
  for b, text in enumerate(batch.texts):
    start = int(np.argmax(r.completion_mask[b])) if text else 0
    ids = r.tokens[b, start:][r.completion_mask[b, start:] > 0].tolist()
    assert tok.decode(ids) == text
    cols = np.flatnonzero(step_mask[b]) - start
    assert len(cols) == sum(1 for line in text.split("\n") if line.strip())
    for j in cols:
      before, upto = tok.decode(ids[:j]), tok.decode(ids[: j + 1])
      assert upto[len(before) :].strip(), (text, j)
      assert not text[len(upto) :].split("\n", 1)[0].strip(), (text, j)


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_ground_truth_process_rewards_last_token_of_each_step(tokenizer):
  tok = BpeTokenizer() if tokenizer == "bpe" else tasks_lib.CharTokenizer()
  task = _task(tok)
  batch, _, labels = _batch(task)
  r = _score("ground_truth_process", task, batch)
  _check_step_ends(tok, batch, r.step_mask)
  for b, (ex, text) in enumerate(zip(batch.examples, batch.texts)):
    at = np.flatnonzero(r.step_mask[b])
    np.testing.assert_array_equal(r.step_rewards[b, at], labels[b])
    np.testing.assert_array_equal(
        r.step_rewards[b, at], task.step_labels(ex, text) if text else []
    )
  assert not (r.step_rewards * (1 - r.step_mask)).any()
  assert r.rewards is None


def test_char_tokenizer_step_ends_are_the_line_ends(task):
  batch, _, _ = _batch(task, ex_index=(1,))
  r = _score("ground_truth_process", task, batch)
  tok = task.tokenizer
  for b, text in enumerate(batch.texts):
    chars = "".join(tok.decode([t]) or "|" for t in r.tokens[b, P:])
    # The character after each step end is a newline, a space, or EOS.
    for t in np.flatnonzero(r.step_mask[b]) - P:
      assert chars[t] not in " \n|" and chars[t + 1] in " \n|", (text, t)


def test_weighted_sum_adds_outcome_and_process_parts(task):
  batch, rule, _ = _batch(task)
  both = _score("rule:1.0,ground_truth_process:0.5", task, _batch(task)[0])
  process = _score("ground_truth_process", task, _batch(task)[0])
  np.testing.assert_array_equal(both.rewards, rule)
  np.testing.assert_array_equal(both.step_rewards, 0.5 * process.step_rewards)
  np.testing.assert_array_equal(both.step_mask, process.step_mask)
  twice = _score("rule:2,rule:-0.5", task, batch)
  np.testing.assert_array_equal(twice.rewards, 1.5 * rule)


def test_unknown_reward_lists_the_valid_ones():
  with pytest.raises(
      ValueError,
      match="unknown reward 'rules'; valid: "
      "none, rule, model, process, ground_truth_process",
  ):
    rewards_lib.parse_spec("rule:1.0,rules:0.5")


@pytest.mark.parametrize(
    "spec, weight",
    [
        ("rule:abc", "abc"),
        ("rule:", ""),
        ("rule:1.0,model:nan", "nan"),
        ("rule:inf", "inf"),
        ("rule:1:2", "1:2"),
    ],
)
def test_bad_weight_raises(spec, weight):
  with pytest.raises(ValueError, match=f"bad weight '{weight}'"):
    rewards_lib.parse_spec(spec)


def test_parse_spec_names_and_weights():
  assert rewards_lib.parse_spec("rule") == [("rule", 1.0)]
  assert rewards_lib.parse_spec("rule:1.0, model:-0.5") == [
      ("rule", 1.0),
      ("model", -0.5),
  ]


@pytest.mark.parametrize(
    "spec, field",
    [("model", "reward_model"), ("process", "process_reward_model")],
)
def test_model_rewards_without_a_model_raise(task, spec, field):
  batch, _, _ = _batch(task)
  with pytest.raises(
      ValueError,
      match=f"the '{spec}' reward needs a trained "
      rf"reward model \(set config.{field}\)",
  ):
    _score(spec, task, batch)


class FakeScores:
  """A score function: distinct values per row and column; records inputs."""

  def __init__(self):
    self.inputs = []

  def __call__(self, tokens, attention_mask):
    self.inputs.append((tokens, attention_mask))
    b, t = tokens.shape
    return (np.arange(t)[None, :] - 20.0) / 8 + np.arange(b)[:, None] / 64


def test_model_reward_is_the_score_at_the_last_real_token(task):
  batch, _, _ = _batch(task)
  scores = FakeScores()
  r = _score("model", task, batch, outcome_model=scores)
  ((tokens, mask),) = scores.inputs
  np.testing.assert_array_equal(tokens, batch.rollout.tokens)
  np.testing.assert_array_equal(mask, batch.rollout.attention_mask)
  want = scores(tokens, mask)
  for b, text in enumerate(batch.texts):
    last = P + len(tasks_lib.encode_completion(task.tokenizer, text)) - 1
    assert batch.rollout.tokens[b, last] == task.tokenizer.eos_id or not text
    assert r.rewards[b] == (np.float32(want[b, last]) if text else 0.0)
  assert r.rewards.dtype == np.float32


def test_process_reward_is_the_sigmoid_of_scores_at_step_ends(task):
  batch, _, _ = _batch(task)
  scores = FakeScores()
  r = _score("process", task, batch, process_model=scores)
  truth = _score("ground_truth_process", task, _batch(task)[0])
  np.testing.assert_array_equal(r.step_mask, truth.step_mask)
  want = 1 / (1 + np.exp(-scores(batch.rollout.tokens, None)))
  np.testing.assert_allclose(
      r.step_rewards, np.where(truth.step_mask > 0, want, 0), rtol=1e-6
  )
  assert r.rewards is None


@pytest.mark.parametrize(
    "spec, fields",
    [
        ("none", set()),
        ("rule", {"rewards"}),
        ("model:0.5", {"rewards"}),
        ("process", {"step_rewards", "step_mask"}),
        (
            "rule:1.0,ground_truth_process:0.5",
            {"rewards", "step_rewards", "step_mask"},
        ),
    ],
)
def test_provided_fields(task, spec, fields):
  assert rewards_lib.provided_fields(spec) == fields
  batch, _, _ = _batch(task)
  r = _score(
      spec, task, batch, outcome_model=FakeScores(), process_model=FakeScores()
  )
  filled = {"rewards", "step_rewards", "step_mask"}
  assert {f for f in filled if getattr(r, f) is not None} == fields


def test_token_set_reward_is_the_fraction_of_completion_ids_in_the_set():
  # Prompt ids (even, in the set) and padding never count; ids beyond the
  # set's largest are outside it; an empty completion scores 0.
  tokens = np.array(
      [[4, 2, 3, 9, 0], [6, 6, 2, 2, 0], [8, 4, 10**6, 7, 0], [2, 4, 0, 0, 0]]
  )
  completion = np.array(
      [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
  )
  batch = sources.Batch(
      rollout_lib.Rollout(tokens=tokens, completion_mask=completion),
      [None] * 4,
      [""] * 4,
      {},
  )
  reward = rewards_lib.token_set([2, 4, 6, 8])
  assert reward.fields == {"rewards"}
  out = reward.fn(rewards_lib.RewardContext(None), batch)
  np.testing.assert_allclose(out["rewards"], [1 / 3, 1.0, 1 / 3, 0.0])
  assert out["rewards"].dtype == np.float32


@pytest.mark.parametrize("ids", [[], [3, -1]])
def test_token_set_reward_refuses_an_empty_or_negative_set(ids):
  with pytest.raises(errors.UserError, match="token_set needs a non-empty"):
    rewards_lib.token_set(ids)
