"""The embedded arithmetic task: generation, splits, reward, step labels."""

import numpy as np
import pytest

from ugrad.tasks import arithmetic
from ugrad.tasks.base import Example


def _reference_answer(question):
  """Left-to-right value of a question, by an independent Python loop."""
  tokens, num = [], ""
  for c in question.rstrip("="):
    if c.isdigit():
      num += c
    else:
      tokens += [int(num), c]
      num = ""
  tokens.append(int(num))
  value = tokens[0]
  for op, b in zip(tokens[1::2], tokens[2::2]):
    value = {"+": value + b, "-": value - b, "*": value * b}[op]
  return value, tokens[0::2], "".join(tokens[1::2])


@pytest.fixture(scope="module")
def task():
  return arithmetic.ArithmeticTask(n_train=20_000, n_test=512, seed=3)


def test_default_difficulty_matches_design(task):
  d = task.difficulty
  assert (d.num_operands, d.digits, d.operators) == (3, (1, 2), "+-")


def test_gold_completion_is_right_everywhere(task):
  for example in list(task.examples("train")[:50]) + list(
      task.examples("test")[:50]
  ):
    text = task.completion(example)
    assert task.reward(example, text) == 1.0
    assert task.step_labels(example, text) == [True, True, True]
    assert arithmetic.step_labels(example.question, text, "local") == [
        True,
        True,
        True,
    ]
    lines = text.split("\n")
    ends = task.step_ends(text)
    assert [text[e] for e in ends] == [line[-1] for line in lines]
    assert text[ends[-1] + 1 :] == ""


def test_examples_follow_knobs_and_left_to_right():
  task = arithmetic.ArithmeticTask(
      num_operands=4, digits=(1, 3), operators="+-*", n_train=3000, seed=1
  )
  examples = task.examples("train")
  seen_digits, seen_ops = set(), set()
  for example in examples[:3000]:
    value, operands, ops = _reference_answer(example.question)
    assert int(example.answer) == value
    assert len(operands) == 4
    seen_digits.update(len(str(x)) for x in operands)
    seen_ops.update(ops)
    assert example.question == "".join(
        str(x) + o for x, o in zip(operands, ops + "=")
    )
  assert seen_digits == {1, 2, 3}
  assert seen_ops == set("+-*")
  p = examples.problems
  assert p.operands.shape == (3000, 4) and p.results.shape == (3000, 3)
  assert np.array_equal(
      p.results[:, -1], [int(e.answer) for e in examples[:3000]]
  )


def test_left_to_right_not_precedence():
  steps = arithmetic.format_steps([2, 3, 4], "+*", [5, 20])
  assert steps == "2+3=5\n5*4=20"
  example = Example("2+3*4=", steps, "20")
  assert arithmetic.step_labels(example.question, steps + "\n#### 20") == [
      True,
      True,
      True,
  ]


def test_negative_intermediates():
  with_neg = arithmetic.ArithmeticTask(n_train=5000, seed=0)
  results = with_neg.examples("train").problems.results
  assert (results < 0).any()
  neg = next(e for e in with_neg.examples("train") if "=-" in e.solution)
  assert with_neg.step_labels(neg, with_neg.completion(neg)) == [True] * 3
  no_neg = arithmetic.ArithmeticTask(n_train=5000, allow_negative=False, seed=0)
  for split in ("train", "test"):
    assert (no_neg.examples(split).problems.results >= 0).all()


def test_splits_disjoint_across_seeds_and_difficulties():
  test_qs = {
      e.question
      for e in arithmetic.ArithmeticTask(n_test=1024, seed=0).examples("test")
  }
  assert len(test_qs) == 1024  # Distinct questions.
  for seed in (0, 1):
    train = arithmetic.ArithmeticTask(n_train=50_000, seed=seed)
    train_qs = {e.question for e in train.examples("train")}
    assert not train_qs & test_qs
  # The split is a property of the question, whatever the difficulty.
  wide = arithmetic.ArithmeticTask(digits=(1, 3), n_train=50_000)
  assert not {e.question for e in wide.examples("train")} & test_qs


def test_small_space_is_enumerated_exactly():
  task = arithmetic.ArithmeticTask(
      num_operands=2, digits=1, operators="+", n_train=2000, n_test=1000
  )
  every = {f"{a}+{b}=" for a in range(10) for b in range(10)}
  test_qs = [e.question for e in task.examples("test")]
  train_qs = {e.question for e in task.examples("train")}
  assert len(set(test_qs)) == len(test_qs) < 100
  assert set(test_qs) | train_qs == every  # 2000 draws cover the rest.
  assert not set(test_qs) & train_qs


def test_deterministic_given_seed():
  a = arithmetic.ArithmeticTask(n_train=100, n_test=100, seed=7)
  b = arithmetic.ArithmeticTask(n_train=100, n_test=100, seed=7)
  c = arithmetic.ArithmeticTask(n_train=100, n_test=100, seed=8)
  for split in ("train", "test"):
    assert list(a.examples(split)) == list(b.examples(split))
    assert list(a.examples(split)) != list(c.examples(split))


Q = "48+27-19="
GOLD = "48+27=75\n75-19=56\n#### 56"
EX = Example(Q, "48+27=75\n75-19=56", "56")


@pytest.mark.parametrize(
    "text,reward",
    [
        (GOLD, 1.0),
        ("#### 56", 1.0),  # The reward checks only the final answer.
        ("48+27=75\n75-19=56", 0.0),  # No "####".
        ("48+27=75\n75-19=56\n#### 57", 0.0),
        ("####56", 1.0),
        ("#### 56 apples", 0.0),
        ("#### 56\n#### 57", 1.0),  # The first "####" counts.
        ("#### 57\n#### 56", 0.0),
        ("", 0.0),
    ],
)
def test_reward(text, reward):
  task = arithmetic.ArithmeticTask(n_train=1, n_test=1)
  assert task.reward(EX, text) == reward


@pytest.mark.parametrize(
    "text,prefix,local",
    [
        (GOLD, [True] * 3, [True] * 3),
        # Wrong first result: the prefix rule propagates the error; the local
        # rule accepts the correct continuation of the written result.
        ("48+27=74\n74-19=55\n#### 55", [False] * 3, [False, True, True]),
        # Continuing from the true value after a wrong written result; under
        # the local rule the answer line still follows the last written result.
        ("48+27=74\n75-19=56\n#### 56", [False] * 3, [False, False, True]),
        # Malformed line in the middle.
        (
            "48+27=75\nhmm\n75-19=56\n#### 56",
            [True, False, False, False],
            [True, False, True, True],
        ),
        # Skipped step: the answer line needs every step.
        ("48+27=75\n#### 56", [True, False], [True, False]),
        # Wrong operand order, extra step, lines after the answer.
        ("27+48=75\n75-19=56\n#### 56", [False] * 3, [False, True, True]),
        (
            "48+27=75\n75-19=56\n56+0=56\n#### 56",
            [True, True, False, False],
            [True, True, False, True],
        ),
        (
            "48+27=75\n75-19=56\n#### 56\n1+1=2",
            [True, True, True, False],
            [True, True, True, False],
        ),
        (
            "48+27=75\n75-19=56\n#### 56 apples\n#### 56",
            [True, True, False, False],
            [True, True, False, False],
        ),
        # Spaces and blank lines are tolerated; blank lines are not steps.
        ("48 + 27 = 75\n\n 75-19=56 \n####  56\n", [True] * 3, [True] * 3),
        ("", [], []),
    ],
)
def test_step_labels(text, prefix, local):
  assert arithmetic.step_labels(Q, text, "prefix") == prefix
  assert arithmetic.step_labels(Q, text, "local") == local
  assert len(arithmetic.ArithmeticTask(n_train=1).step_ends(text)) == len(
      prefix
  )


def test_prefix_labels_never_recover():
  rng = np.random.default_rng(0)
  task = arithmetic.ArithmeticTask(n_train=200, seed=2)
  for example in task.examples("train"):
    chars = list(task.completion(example))
    for _ in range(2):  # Corrupt two characters.
      chars[rng.integers(len(chars))] = "0123456789+-\n#"[rng.integers(14)]
    labels = task.step_labels(example, "".join(chars))
    assert labels == sorted(labels, reverse=True)
    assert len(labels) == len(task.step_ends("".join(chars)))


def test_step_ends_offsets():
  text = "12+3=15\n15-4=11\n#### 11"
  assert arithmetic.ArithmeticTask(n_train=1).step_ends(text) == [6, 14, 22]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_operands": 1}, "num_operands"),
        ({"digits": (2, 1)}, "digits"),
        ({"digits": 0}, "digits"),
        ({"operators": "+/"}, "operators"),
        ({"operators": "++"}, "operators"),
        ({"operators": ""}, "operators"),
        ({"num_operands": 7, "digits": 3}, "overflow"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"step_rule": "greedy"}, "step_rule"),
    ],
)
def test_bad_knobs_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    arithmetic.ArithmeticTask(**kwargs)


def test_unknown_split_and_bad_question():
  task = arithmetic.ArithmeticTask(n_train=1, n_test=1)
  with pytest.raises(ValueError, match="valid splits"):
    task.examples("dev")
  with pytest.raises(ValueError, match="not an arithmetic question"):
    task.step_labels(Example("what?", "", "1"), "#### 1")


def test_validation_split_is_disjoint_and_leaves_train_and_test_alone():
  plain = arithmetic.ArithmeticTask(n_train=4000, n_test=200)
  with pytest.raises(ValueError, match="set task_kwargs.val_fraction"):
    plain.examples("validation")
  held = arithmetic.ArithmeticTask(
      n_train=4000, n_test=200, val_fraction=0.1, n_validation=200
  )
  questions = {
      s: {e.question for e in held.examples(s)}
      for s in ("train", "validation", "test")
  }
  assert len(questions["validation"]) == 200
  assert not questions["validation"] & questions["train"]
  assert not questions["validation"] & questions["test"]
  assert not questions["train"] & questions["test"]
  # The test split is the same with or without a validation split.
  assert [e.question for e in held.examples("test")] == [
      e.question for e in plain.examples("test")
  ]
