"""Data sources and the fixed token layout, on hand-built and scripted data.

No model is involved: a scripted sampler answers each prompt with chosen
completions, so every field of a drawn batch can be checked exactly.
"""

import jax
import numpy as np
import pytest

from ugrad import rewards as rewards_lib
from ugrad import rollout as rollout_lib
from ugrad import sampling
from ugrad import sources
from ugrad import tasks as tasks_lib
from ugrad.sampling import layout

P, N = 10, 32  # Prompt and completion widths that fit every 1-digit problem.
G = 2

RIGHT, WRONG = True, False
# Only the first step, right (step labels [1]); then a wrong "####" ([1, 0]).
FIRST, FIRST_WRONG = "first", "first_wrong"
MIXED = (RIGHT, WRONG)
FLAT_RIGHT = (RIGHT, RIGHT)
FLAT_WRONG = (WRONG, WRONG)


@pytest.fixture(scope="module")
def task():
  return tasks_lib.ArithmeticTask(
      num_operands=3, digits=1, n_train=64, n_test=8, seed=0
  )


@pytest.fixture(scope="module")
def score(task):
  return rewards_lib.make_scorer("rule", rewards_lib.RewardContext(task))


class ScriptedSampler:
  """A `Sampler` whose G completions per prompt follow a script.

  `plan(call, i, question)` gives G kinds for prompt i of the call-th call:
  RIGHT for the gold completion, WRONG for a wrong final answer, FIRST or
  FIRST_WRONG. Every call is recorded (params, questions, key data).
  """

  def __init__(self, task, plan, group_size=G):
    self.task = task
    self.plan = plan
    self.group_size = group_size
    self.by_question = {ex.question: ex for ex in task.examples("train")}
    self.calls = []

  def text(self, question, kind):
    ex = self.by_question[question]
    first = ex.solution.split("\n")[0]
    wrong = f"#### {int(ex.answer) + 1}"
    if kind == FIRST:
      return first
    if kind == FIRST_WRONG:
      return f"{first}\n{wrong}"
    return self.task.completion(ex) if kind else f"{question[:-1]}\n{wrong}"

  def __call__(self, params, prompts, key):
    tok = self.task.tokenizer
    questions = [text.strip() for text in prompts]
    call = len(self.calls)
    self.calls.append((params, questions, np.asarray(jax.random.key_data(key))))
    completions, texts = [], []
    for i, q in enumerate(questions):
      pattern = self.plan(call, i, q)
      assert len(pattern) == self.group_size
      texts += [self.text(q, kind) for kind in pattern]
    completions = [tasks_lib.encode_completion(tok, t) for t in texts]
    ids = [tasks_lib.encode_prompt(tok, text) for text in prompts]
    arrays = layout.pack(
        [p for p in ids for _ in range(self.group_size)],
        completions,
        P,
        N,
        tok.pad_id,
    )
    cm = arrays["completion_mask"]
    return sampling.Completions(
        arrays["tokens"],
        arrays["attention_mask"],
        cm,
        fake_logp(arrays["tokens"], cm),
        [tok.decode(c) for c in layout.completion_ids(arrays["tokens"], cm)],
    )


def fake_logp(tokens, completion_mask):
  """Distinct per token and row, so a moved row would be noticed."""
  rows = np.arange(len(tokens))[:, None]
  return np.where(
      completion_mask > 0, -0.01 * tokens - 0.001 * rows, 0.0
  ).astype(np.float32)


def _questions(batch):
  return [ex.question for ex in batch.examples]


def _group_flat(batch, group_size=G):
  rewards = np.asarray(batch.rollout.rewards).reshape(-1, group_size)
  return np.ptp(rewards, axis=1) == 0


def _assert_same_batch(a, b):
  for field, x in vars(a.rollout).items():
    y = getattr(b.rollout, field)
    if x is None:
      assert y is None, field
    else:
      np.testing.assert_array_equal(x, y, err_msg=field)
  assert a.examples == b.examples
  assert a.texts == b.texts
  assert a.metrics == b.metrics


# --- layout -----------------------------------------------------------------


def test_pack_left_pads_prompts_and_right_pads_completions():
  out = layout.pack(
      [[5, 6], [7], []],
      [[8, 9, 2], [2], []],
      prompt_len=3,
      completion_len=4,
      pad_id=0,
  )
  np.testing.assert_array_equal(
      out["tokens"],
      [[0, 5, 6, 8, 9, 2, 0], [0, 0, 7, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
  )
  np.testing.assert_array_equal(
      out["attention_mask"],
      [[0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
  )
  np.testing.assert_array_equal(
      out["completion_mask"],
      [[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
  )
  assert all(v.dtype == np.int32 for v in out.values())
  assert layout.completion_ids(out["tokens"], out["completion_mask"]) == [
      [8, 9, 2],
      [2],
      [],
  ]


def test_pack_prompts_uses_the_pad_id_and_full_width_prompts():
  tokens, mask = layout.pack_prompts([[4, 5, 6], [7]], 3, pad_id=9)
  np.testing.assert_array_equal(tokens, [[4, 5, 6], [9, 9, 7]])
  np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])


@pytest.mark.parametrize(
    "prompts, completions, match",
    [
        (
            [[1], [1, 2, 3, 4]],
            [[5], [5]],
            "prompt 1 has 4 tokens, more than the " "prompt length 3",
        ),
        (
            [[1], [1]],
            [[5] * 5, [5]],
            "completion 0 has 5 tokens, more than the " "completion budget 4",
        ),
        ([[1], [1]], [[5]], "2 prompts but 1 completions"),
    ],
)
def test_pack_refuses_what_does_not_fit(prompts, completions, match):
  with pytest.raises(ValueError, match=match):
    layout.pack(prompts, completions, 3, 4, 0)


# --- dataset ----------------------------------------------------------------


def _dataset(task, seed=0, prompt_len=P):
  return sources.DatasetSource(
      task, batch_size=6, prompt_len=prompt_len, completion_len=N, seed=seed
  )


def test_dataset_rows_are_gold_examples_in_the_layout(task):
  batch = _dataset(task).draw(None, step=3)
  tok = task.tokenizer
  r = batch.rollout
  assert r.tokens.shape == (6, P + N)
  for b, ex in enumerate(batch.examples):
    prompt = tasks_lib.encode_prompt(tok, task.prompt(ex))
    gold = tasks_lib.encode_completion(tok, task.completion(ex))
    assert gold[-1] == tok.eos_id
    want = [tok.pad_id] * (P - len(prompt)) + prompt + gold
    want += [tok.pad_id] * (P + N - len(want))
    np.testing.assert_array_equal(r.tokens[b], want)
    np.testing.assert_array_equal(
        r.completion_mask[b],
        np.r_[np.zeros(P), np.ones(len(gold)), np.zeros(N - len(gold))],
    )
    np.testing.assert_array_equal(
        r.attention_mask[b],
        np.r_[
            np.zeros(P - len(prompt)),
            np.ones(len(prompt) + len(gold)),
            np.zeros(N - len(gold)),
        ],
    )
    assert batch.texts[b] == task.completion(ex)
  assert r.rewards is None and r.group_ids is None


def test_dataset_draws_depend_only_on_seed_and_step(task):
  a, b = _dataset(task), _dataset(task)
  for step in (0, 1, 2):
    a.draw(None, step)
  _assert_same_batch(a.draw(None, 7), b.draw(None, 7))
  assert _questions(a.draw(None, 7)) != _questions(a.draw(None, 8))
  assert _questions(a.draw(None, 7)) != _questions(
      _dataset(task, seed=1).draw(None, 7)
  )


def test_dataset_scores_when_given_a_scorer(task, score):
  batch = _dataset(task).draw(None, 0, score)
  np.testing.assert_array_equal(batch.rollout.rewards, np.ones(6))


def test_dataset_too_short_prompt_len_names_the_prompt(task):
  with pytest.raises(ValueError, match="more than the prompt length 4"):
    _dataset(task, prompt_len=4).draw(None, 0)


# --- online -----------------------------------------------------------------


def _online(task, plan, questions=4, **kwargs):
  sampler = ScriptedSampler(task, plan)
  source = sources.OnlineSource(
      task,
      sampler=sampler,
      questions=questions,
      group_size=G,
      prompt_len=P,
      seed=0,
      **kwargs,
  )
  return source, sampler


def _by_group(*patterns):
  """The same patterns, group by group, at every call."""
  return lambda call, i, q: patterns[i]


def _by_call(*patterns):
  """patterns[call][i] for group i of the call-th call."""
  return lambda call, i, q: patterns[call][i]


def _by_parity(odd, even):
  """`odd` for questions whose first operand is odd, else `even`."""
  return lambda call, i, q: odd if int(q[0]) % 2 else even


def _always(pattern):
  return lambda call, i, q: pattern


def test_online_rows_are_the_samples_in_groups(task, score):
  patterns = (MIXED, FLAT_RIGHT, FLAT_WRONG, MIXED)
  source, sampler = _online(task, _by_group(*patterns))
  batch = source.draw("params", 5, score)
  assert len(sampler.calls) == 1 and sampler.calls[0][0] == "params"
  r = batch.rollout
  assert r.tokens.shape == (8, P + N)
  np.testing.assert_array_equal(r.group_ids, [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(r.rewards, [1, 0, 1, 1, 0, 0, 1, 0])
  questions = sampler.calls[0][1]
  assert _questions(batch) == [q for q in questions for _ in range(G)]
  for b, text in enumerate(batch.texts):
    assert text == sampler.text(questions[b // G], patterns[b // G][b % G])
  np.testing.assert_array_equal(
      r.logp_old, fake_logp(r.tokens, r.completion_mask)
  )
  assert batch.metrics == {"zero_signal_group_frac": 0.5, "draws": 1.0}


def test_online_draws_depend_only_on_seed_and_step(task, score):
  plan = _by_parity(MIXED, FLAT_RIGHT)
  a, sampler_a = _online(task, plan)
  b, sampler_b = _online(task, plan)
  a.draw(None, 0, score)
  _assert_same_batch(a.draw(None, 4, score), b.draw(None, 4, score))
  np.testing.assert_array_equal(sampler_a.calls[1][2], sampler_b.calls[0][2])
  assert not np.array_equal(sampler_a.calls[0][2], sampler_a.calls[1][2])
  assert sampler_a.calls[0][1] != sampler_a.calls[1][1]


def test_online_zero_signal_frac_counts_flat_groups(task, score):
  source, _ = _online(task, _by_parity(MIXED, FLAT_WRONG), questions=8)
  for step in range(3):
    batch = source.draw(None, step, score)
    flat = [int(q[0]) % 2 == 0 for q in _questions(batch)[::G]]
    assert batch.metrics["zero_signal_group_frac"] == np.mean(flat)
    np.testing.assert_array_equal(_group_flat(batch), flat)


def test_dynamic_keeps_only_varied_groups_and_draws_again(task, score):
  patterns = [
      (MIXED, FLAT_RIGHT, MIXED, FLAT_WRONG),
      (FLAT_RIGHT, MIXED, MIXED, MIXED),
  ]
  source, sampler = _online(
      task, _by_call(*patterns), dynamic=True, max_draws=4
  )
  batch = source.draw(None, 2, score)
  assert len(sampler.calls) == 2
  (_, first, key0), (_, second, key1) = sampler.calls
  assert not np.array_equal(key0, key1)
  kept = [first[0], first[2], second[1], second[2]]
  assert _questions(batch) == [q for q in kept for _ in range(G)]
  np.testing.assert_array_equal(batch.rollout.rewards, [1, 0] * 4)
  np.testing.assert_array_equal(batch.rollout.group_ids, np.arange(8) // G)
  assert batch.metrics == {
      "zero_signal_group_frac": 0.0,
      "draws": 2.0,
      "dynamic_fill_frac": 0.0,
  }


def test_dynamic_fills_with_dropped_groups_after_max_draws(task, score):
  patterns = [(MIXED, FLAT_RIGHT, FLAT_WRONG, FLAT_RIGHT), (FLAT_WRONG,) * 4]
  source, sampler = _online(
      task, _by_call(*patterns), dynamic=True, max_draws=2
  )
  batch = source.draw(None, 0, score)
  assert len(sampler.calls) == 2
  first = sampler.calls[0][1]
  # The varied group first, then dropped groups in the order drawn.
  assert _questions(batch) == [q for q in first for _ in range(G)]
  np.testing.assert_array_equal(batch.rollout.rewards, [1, 0, 1, 1, 0, 0, 1, 1])
  np.testing.assert_array_equal(batch.rollout.group_ids, np.arange(8) // G)
  assert batch.metrics == {
      "zero_signal_group_frac": 0.75,
      "draws": 2.0,
      "dynamic_fill_frac": 0.75,
  }


def test_dynamic_with_no_signal_at_all_stops_at_max_draws(task, score):
  source, sampler = _online(
      task, _always(FLAT_RIGHT), dynamic=True, max_draws=3
  )
  batch = source.draw(None, 0, score)
  assert len(sampler.calls) == 3
  assert _questions(batch) == [q for q in sampler.calls[0][1] for _ in range(G)]
  assert batch.metrics == {
      "zero_signal_group_frac": 1.0,
      "draws": 3.0,
      "dynamic_fill_frac": 1.0,
  }


def _process_score(task):
  return rewards_lib.make_scorer(
      "ground_truth_process", rewards_lib.RewardContext(task)
  )


def test_process_rewards_signal_is_in_the_step_rewards(task):
  # (RIGHT, FIRST): step rewards [1, 1, 1] and [1], all equal, no signal
  # although the sums differ; (FIRST, FIRST_WRONG): [1] and [1, 0], signal
  # although the sums are equal.
  patterns = ((RIGHT, FIRST), (RIGHT, FIRST), (FIRST, FIRST_WRONG), MIXED)
  source, _ = _online(task, _by_group(*patterns))
  batch = source.draw(None, 0, _process_score(task))
  assert batch.rollout.rewards is None
  sums = batch.rollout.step_rewards.sum(1)
  np.testing.assert_array_equal(sums, [3, 1, 3, 1, 1, 1, 3, 0])
  assert batch.metrics["zero_signal_group_frac"] == 0.5


def test_dynamic_with_process_rewards_keeps_groups_with_step_signal(task):
  patterns = [
      ((RIGHT, FIRST), (FIRST, FIRST_WRONG), MIXED, (RIGHT, FIRST)),
      ((FIRST, FIRST_WRONG),) * 4,
  ]
  source, sampler = _online(task, _by_call(*patterns), dynamic=True)
  batch = source.draw(None, 0, _process_score(task))
  first, second = sampler.calls[0][1], sampler.calls[1][1]
  kept = [first[1], first[2], second[0], second[1]]
  assert _questions(batch) == [q for q in kept for _ in range(G)]
  assert batch.metrics["zero_signal_group_frac"] == 0.0
  assert batch.metrics["dynamic_fill_frac"] == 0.0


def test_sampling_source_without_rewards_says_so(task):
  source, _ = _online(task, _by_group(*[MIXED] * 4))
  none = rewards_lib.make_scorer("none", rewards_lib.RewardContext(task))
  with pytest.raises(ValueError, match="the reward gave none"):
    source.draw(None, 0, none)


# --- pairs ------------------------------------------------------------------


def _hand_batch(rewards, step_rewards=None):
  """Q groups of 3 rows; row b's tokens are all b + 3."""
  rows = len(rewards) * 3 if rewards is not None else len(step_rewards)
  tokens = np.repeat(np.arange(rows, dtype=np.int32)[:, None] + 3, 4, 1)
  mask = np.tile(np.array([0, 1, 1, 0], np.int32), (rows, 1))
  rollout = rollout_lib.Rollout(
      tokens=tokens,
      completion_mask=mask,
      attention_mask=mask,
      rewards=None if rewards is None else np.ravel(rewards).astype(np.float32),
      step_rewards=step_rewards,
      group_ids=np.arange(rows, dtype=np.int32) // 3,
  )
  return sources.Batch(
      rollout,
      [f"ex{b // 3}" for b in range(rows)],
      [f"text{b}" for b in range(rows)],
      {"draws": 1.0},
  )


def test_make_pairs_picks_best_and_worst_and_blanks_flat_groups():
  batch = _hand_batch([[0, 1, 1], [1, 1, 1], [0.5, 0, 1], [0, 0, 0]])
  out = sources.make_pairs(batch, 3)
  r = out.rollout
  # First best / first worst row of each group.
  rows = [1, 0, 3, 3, 8, 7, 9, 9]
  np.testing.assert_array_equal(r.tokens[:, 0], np.asarray(rows) + 3)
  np.testing.assert_array_equal(r.rewards, [1, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(
      r.completion_mask.sum(1), [2, 2, 0, 0, 2, 2, 0, 0]
  )
  np.testing.assert_array_equal(r.pair_ids, [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(r.group_ids, [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(r.pair_sign, [1, -1] * 4)
  assert out.examples == [f"ex{b // 3}" for b in rows]
  assert out.metrics == {"draws": 1.0, "pairs_dropped_frac": 0.5}
  assert batch.metrics == {"draws": 1.0}  # The input is left alone.


def test_make_pairs_ranks_by_summed_step_rewards_without_outcome():
  steps = np.zeros((6, 4), np.float32)
  steps[0, 1], steps[1, 1:3], steps[2, 2] = 1, 1, 1  # Sums 1, 2, 1.
  steps[3:, 2] = 1  # All equal.
  out = sources.make_pairs(_hand_batch(None, steps), 3)
  np.testing.assert_array_equal(out.rollout.tokens[:, 0] - 3, [1, 0, 3, 3])
  np.testing.assert_array_equal(
      out.rollout.completion_mask.sum(1), [2, 2, 0, 0]
  )
  assert out.metrics["pairs_dropped_frac"] == 0.5


def test_kto_rows_follow_each_sample_with_another_questions_completion():
  batch = _hand_batch([[0, 1, 1], [1, 0, 1]])
  batch.rollout = batch.rollout.replace(
      completion_mask=batch.rollout.completion_mask
      * np.array([[1], [1], [1], [1], [1], [0]])
  )  # Row 5 is empty: its pair, and the pair that borrows it, are blank.
  out = sources.make_kto_rows(batch, 3, prompt_len=1)
  r = out.rollout
  other = [3, 4, 5, 0, 1, 2]
  np.testing.assert_array_equal(r.tokens[0::2], batch.rollout.tokens)
  np.testing.assert_array_equal(r.tokens[1::2, 0], np.arange(6) + 3)
  np.testing.assert_array_equal(
      r.tokens[1::2, 1:, None],
      np.add.outer(np.asarray(other) + 3, np.zeros((3, 1))),
  )
  np.testing.assert_array_equal(r.pair_ids, np.arange(12) // 2)
  np.testing.assert_array_equal(r.pair_sign, [1, -1] * 6)
  np.testing.assert_array_equal(r.rewards[0::2], [0, 1, 1, 1, 0, 1])
  real = r.completion_mask.sum(1) > 0
  np.testing.assert_array_equal(real, np.repeat([1, 1, 0, 1, 1, 0], 2))
  assert out.examples == [f"ex{b // 3}" for b in range(6) for _ in range(2)]
  assert out.texts[1::2] == [f"text{b}" for b in other]
  assert out.metrics["kto_blank_frac"] == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="questions must be >= 2"):
    sources.make_kto_rows(sources.select(batch, range(3)), 3, 1)


def test_online_pairs_chosen_is_right_rejected_is_wrong(task, score):
  source, sampler = _online(
      task, _by_group((WRONG, RIGHT), FLAT_RIGHT, MIXED, FLAT_WRONG), pairs=True
  )
  batch = source.draw(None, 1, score)
  r = batch.rollout
  questions = sampler.calls[0][1]
  assert _questions(batch) == [q for q in questions for _ in range(2)]
  np.testing.assert_array_equal(r.pair_sign, [1, -1] * 4)
  np.testing.assert_array_equal(r.pair_ids, np.arange(8) // 2)
  real = r.completion_mask.sum(1) > 0
  np.testing.assert_array_equal(real, [1, 1, 0, 0, 1, 1, 0, 0])
  for b in np.flatnonzero(real):
    assert task.reward(batch.examples[b], batch.texts[b]) == (b % 2 == 0)
  assert batch.metrics["pairs_dropped_frac"] == 0.5
  assert batch.metrics["zero_signal_group_frac"] == 0.5


def test_dynamic_pairs_have_no_dropped_pairs_when_signal_suffices(task, score):
  patterns = [(MIXED, FLAT_RIGHT, MIXED, FLAT_WRONG), (MIXED,) * 4]
  source, _ = _online(task, _by_call(*patterns), pairs=True, dynamic=True)
  batch = source.draw(None, 0, score)
  assert batch.metrics["pairs_dropped_frac"] == 0.0
  assert (batch.rollout.completion_mask.sum(1) > 0).all()


# --- frozen policy ----------------------------------------------------------


def _frozen(task, workdir, plan, **kwargs):
  sampler = ScriptedSampler(task, plan)
  source = sources.FrozenPolicySource(
      task,
      workdir=str(workdir),
      pool_questions=5,
      sampler=sampler,
      questions=2,
      group_size=G,
      prompt_len=P,
      seed=0,
      **kwargs,
  )
  return source, sampler


def _refuse(call, i, q):
  raise AssertionError("the cached pool must not be sampled again")


def test_frozen_pool_is_sampled_once_and_cached(task, score, tmp_path):
  source, sampler = _frozen(
      task, tmp_path / "run", _by_parity(MIXED, FLAT_RIGHT)
  )
  first = [source.draw("sft", step, score) for step in range(16)]
  # Pool of 5 questions in chunks of 2: three calls, the last one padded.
  assert len(sampler.calls) == 3
  assert all(params == "sft" for params, _, _ in sampler.calls)
  path = tmp_path / "run" / "frozen_pool.npz"
  with np.load(path) as pool:
    idx = pool["question_idx"]
    tokens, mask = pool["tokens"], pool["attention_mask"]
    logp = pool["logp_old"]
  assert len(idx) == 5 and tokens.shape == (5 * G, P + N)
  train = task.examples("train")
  asked = [q for _, questions, _ in sampler.calls for q in questions][:5]
  assert asked == [train[int(i)].question for i in idx]
  for row in range(5 * G):
    prompt = task.tokenizer.decode(tokens[row, :P][mask[row, :P] > 0])
    assert prompt == task.prompt(train[int(idx[row // G])])
  # Every drawn row is a row of the pool, groups drawn without replacement;
  # draws change with the step.
  for batch in first:
    # The sampler's log-probs tell apart identical samples of one group.
    rows = [
        np.flatnonzero((tokens == t).all(1) & (logp == lp).all(1))
        for t, lp in zip(batch.rollout.tokens, batch.rollout.logp_old)
    ]
    assert all(len(r) == 1 for r in rows)
    rows = np.concatenate(rows)
    np.testing.assert_array_equal(rows % G, np.arange(len(rows)) % G)
    assert len(set(rows // G)) == len(rows) // G
    np.testing.assert_array_equal(batch.rollout.group_ids, np.arange(4) // G)
  assert len({tuple(_questions(b)) for b in first}) > 1
  # A new source (a resumed run) reloads the pool and draws the same data.
  again, _ = _frozen(task, tmp_path / "run", _refuse)
  for step in (4, 1):
    _assert_same_batch(again.draw("sft", step, score), first[step])


def test_frozen_draws_are_scored_at_every_step(task, score, tmp_path):
  calls = []

  def count(batch):
    calls.append(len(batch.examples))
    return score(batch)

  source, _ = _frozen(task, tmp_path, _always(MIXED))
  source.draw(None, 0, count)
  source.draw(None, 1, count)
  assert calls == [4, 4]


def test_frozen_dynamic_draws_again_from_the_pool(task, score, tmp_path):
  source, _ = _frozen(
      task, tmp_path, _always(FLAT_RIGHT), dynamic=True, max_draws=3
  )
  batch = source.draw(None, 0, score)
  assert batch.metrics == {
      "zero_signal_group_frac": 1.0,
      "draws": 3.0,
      "dynamic_fill_frac": 1.0,
  }


# --- registry ---------------------------------------------------------------


def test_unknown_source_lists_the_valid_ones():
  with pytest.raises(
      ValueError,
      match="unknown source 'web'; valid: " "dataset, frozen_policy, online",
  ):
    sources.get("web")
  assert sources.get("online") is sources.OnlineSource


def test_select_and_concat():
  batch = _hand_batch([[0, 1, 1], [1, 0, 0]])
  picked = sources.select(batch, [4, 0])
  np.testing.assert_array_equal(picked.rollout.tokens[:, 0], [7, 3])
  assert picked.texts == ["text4", "text0"]
  both = sources.concat([picked, sources.select(batch, [5])])
  np.testing.assert_array_equal(both.rollout.rewards, [0, 0, 0])
  assert both.examples == ["ex1", "ex0", "ex1"]
