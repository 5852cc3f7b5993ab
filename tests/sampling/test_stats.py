"""ugrad.sampling.stats and .voting: pass@k, maj@k, bootstrap intervals, AUC."""

import collections
import fractions
import itertools
import json
import math

import numpy as np
import pytest

from ugrad.sampling import stats
from ugrad.sampling import voting

# ----------------------------------------------------------------- pass@k


def _brute_force_pass_at_k(n, c, k):
  """Fraction of all k-subsets of n samples (c correct) holding a correct."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(samples, k))
  return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_all_subsets():
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        got = stats.pass_at_k(n, c, k)
        assert got == pytest.approx(
            _brute_force_pass_at_k(n, c, k), abs=1e-12
        ), (n, c, k)


def test_pass_at_k_hand_values():
  assert stats.pass_at_k(10, 0, 5) == 0.0
  assert stats.pass_at_k(10, 10, 5) == 1.0
  assert stats.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
  for n, c in [(1, 0), (1, 1), (7, 3), (64, 17)]:
    assert stats.pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)


def test_pass_at_k_is_exact_for_large_n():
  # Exact rational reference: Python's int / int is correctly rounded even
  # when the binomials have hundreds of digits.
  for n, c, k in [
      (2000, 1, 1000),
      (2000, 37, 64),
      (1024, 900, 100),
      (5000, 3, 2),
  ]:
    want = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert stats.pass_at_k(n, c, k) == pytest.approx(want, rel=1e-12, abs=1e-15)
  assert stats.pass_at_k(2000, 1, 1000) == pytest.approx(0.5, abs=1e-14)
  # Fewer than k incorrect samples: every k-subset holds a correct one.
  assert stats.pass_at_k(1000, 999, 2) == 1.0
  assert stats.pass_at_k(100, 60, 50) == 1.0


def test_pass_at_k_is_vectorised_over_questions():
  n = np.array([4, 8, 3, 8])
  c = np.array([1, 0, 3, 5])
  got = stats.pass_at_k(n, c, 2)
  assert got.shape == (4,)
  want = [_brute_force_pass_at_k(int(a), int(b), 2) for a, b in zip(n, c)]
  np.testing.assert_allclose(got, want, atol=1e-12)
  # A scalar n broadcasts against per-question counts.
  got = stats.pass_at_k(6, [0, 2, 6], 3)
  np.testing.assert_allclose(
      got, [_brute_force_pass_at_k(6, x, 3) for x in (0, 2, 6)], atol=1e-12
  )


@pytest.mark.parametrize(
    "n,c,k,match",
    [
        ([4, 2], [1, 1], 3, "question 1 has only n=2"),
        (4, 1, 0, "k >= 1"),
        (4, 5, 2, "0 <= c <= n"),
        ([4, 4], [1, -1], 2, "question 1 has c=-1"),
        (4.5, 1, 2, "n must hold integers"),
        (4, 1, [1, 2], "single integer"),
    ],
)
def test_pass_at_k_rejects_bad_input(n, c, k, match):
  with pytest.raises(ValueError, match=match):
    stats.pass_at_k(n, c, k)


# ------------------------------------------------------------------ maj@k


def _reference_maj(answers, flags):
  """Majority vote with string equality, expected accuracy over ties."""
  votes = collections.Counter(a for a in answers if a is not None)
  if not votes:
    return 0.0
  top = max(votes.values())
  winners = [a for a, v in votes.items() if v == top]
  correct = {a: f for a, f in zip(answers, flags) if a is not None}
  return sum(correct[a] for a in winners) / len(winners)


def test_maj_at_k_simple_majority():
  answers = [["1", "2", "2", "3"], ["1", "2", "2", "3"]]
  flags = [[a == "2" for a in answers[0]], [a == "1" for a in answers[1]]]
  np.testing.assert_array_equal(voting.maj_at_k(answers, flags, 4), [1.0, 0.0])


def test_maj_at_k_unparsable_answers_do_not_vote():
  answers = [[None, None, None, "5"], [None, None], [None, "4", None, "7"]]
  flags = [
      [False, False, False, True],
      [False, False],
      [False, True, False, False],
  ]
  got = voting.maj_at_k([answers[0]], [flags[0]], 4)
  np.testing.assert_array_equal(got, [1.0])
  # Nobody votes: 0. A tie between two single parsed votes: 1/2.
  got = voting.maj_at_k(answers[1:], flags[1:], 2, subsets="chunks")
  np.testing.assert_array_equal(got, [0.0, 0.5])


def test_maj_at_k_tie_breaks():
  answers = [["1", "2"], ["1", "2", "2", "1", "3"]]
  right_second = [[False, True], [False, True, True, False, False]]
  right_first = [[True, False], [True, False, False, True, False]]
  np.testing.assert_array_equal(
      voting.maj_at_k(
          answers, right_second, 2, ties="expected", subsets="chunks"
      ),
      [0.5, 0.5],
  )
  np.testing.assert_array_equal(
      voting.maj_at_k(answers, right_second, 2, ties="first", subsets="chunks"),
      [0.0, 0.5],
  )
  np.testing.assert_array_equal(
      voting.maj_at_k(answers, right_first, 2, ties="first", subsets="chunks"),
      [1.0, 0.5],
  )
  # Three-way tie, one correct: expected accuracy 1/3; first-seen picks "7".
  three = [["7", "8", "9"]]
  np.testing.assert_allclose(
      voting.maj_at_k(three, [[False, True, False]], 3), [1 / 3]
  )
  np.testing.assert_array_equal(
      voting.maj_at_k(three, [[False, True, False]], 3, ties="first"), [0.0]
  )


def test_maj_at_k_groups_by_the_equivalence_function():
  answers = [["0.5", "1/2", "3"]]
  flags = [[True, True, False]]
  # As strings, three one-vote groups tie and two of them are correct.
  np.testing.assert_allclose(voting.maj_at_k(answers, flags, 3), [2 / 3])
  same_number = lambda a, b: fractions.Fraction(a) == fractions.Fraction(b)
  np.testing.assert_array_equal(
      voting.maj_at_k(answers, flags, 3, equivalent=same_number), [1.0]
  )
  # Three against two: the equivalence turns the minority into the majority.
  answers = [["3", "0.5", "3", "1/2", "2/4"]]
  flags = [[False, True, False, True, True]]
  np.testing.assert_array_equal(voting.maj_at_k(answers, flags, 5), [0.0])
  np.testing.assert_array_equal(
      voting.maj_at_k(answers, flags, 5, equivalent=same_number), [1.0]
  )


def test_maj_at_k_with_math_verify_equivalence():
  math_verify = pytest.importorskip("math_verify")
  answers = [["$\\frac{1}{2}$", "$3$", "$0.5$", "$3$", "$\\frac{2}{4}$"]]
  gold = math_verify.parse("$\\frac12$")
  same = lambda a, b: math_verify.verify(
      math_verify.parse(a), math_verify.parse(b)
  )
  checker = lambda q, a: math_verify.verify(gold, math_verify.parse(a))
  np.testing.assert_array_equal(
      voting.maj_at_k(answers, checker, 5, equivalent=same), [1.0]
  )


def test_maj_at_k_checker_matches_flags_and_is_called_once_per_group():
  answers = [["a", "b", "b", None, "a", "b"], ["x", "y", "x", "z", "z", "z"]]
  gold = ["b", "x"]
  flags = [[a == g for a in row] for row, g in zip(answers, gold)]
  calls = []

  def checker(q, answer):
    calls.append((q, answer))
    return answer == gold[q]

  got = voting.maj_at_k(answers, checker, 3)
  np.testing.assert_array_equal(got, voting.maj_at_k(answers, flags, 3))
  assert sorted(calls) == [(0, "a"), (0, "b"), (1, "x"), (1, "y"), (1, "z")]


def _exact_subset_mean(row, flags, k):
  subsets = itertools.combinations(range(len(row)), k)
  scores = [
      _reference_maj([row[i] for i in s], [flags[i] for i in s])
      for s in subsets
  ]
  return sum(scores) / len(scores)


def test_maj_at_k_random_subsets_enumerate_when_few():
  rng = np.random.default_rng(3)
  answers = [list(rng.choice(["1", "2", "3", None], size=6)) for _ in range(5)]
  answers = [[None if a is None else str(a) for a in row] for row in answers]
  flags = [[a == "2" for a in row] for row in answers]
  # C(6, 3) = 20 <= num_subsets, so the mean over all subsets is exact.
  got = voting.maj_at_k(answers, flags, 3, num_subsets=20)
  want = [_exact_subset_mean(r, f, 3) for r, f in zip(answers, flags)]
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_maj_at_k_random_subsets_sample_when_many():
  row = ["1", "2", "2", "3", "1", "2", "3", "3", "1", "2", "2", "4"]
  flags = [[a == "2" for a in row]]
  exact = _exact_subset_mean(row, flags[0], 4)  # C(12, 4) = 495 subsets.
  a = voting.maj_at_k([row], flags, 4, num_subsets=400, seed=1)
  b = voting.maj_at_k([row], flags, 4, num_subsets=400, seed=1)
  c = voting.maj_at_k([row], flags, 4, num_subsets=400, seed=2)
  np.testing.assert_array_equal(a, b)
  assert a[0] != c[0]
  assert abs(a[0] - exact) < 0.05
  # A question's score does not depend on the questions after it.
  both = voting.maj_at_k(
      [row, row[::-1]], [flags[0], flags[0][::-1]], 4, num_subsets=400, seed=1
  )
  assert both[0] == a[0]


def test_maj_at_k_random_subsets_keep_sample_order_for_first_seen_ties():
  row = ["a"] * 10 + ["b"] * 10
  flags = [[a == "a" for a in row]]
  # k = 2: a tied pair goes to "a", which always comes first, so maj@2 is the
  # chance of drawing at least one "a" (a random order would give 1/2).
  want = 1 - math.comb(10, 2) / math.comb(20, 2)
  got = voting.maj_at_k([row], flags, 2, ties="first", num_subsets=150)
  assert abs(got[0] - want) < 0.1


def test_maj_at_k_chunks():
  row = ["1", "1", "2", "3", "3", "3", "9"]
  flags = [[a == "1" for a in row]]
  # Chunks [1 1], [2 3], [3 3]; the seventh sample is left over.
  np.testing.assert_allclose(
      voting.maj_at_k([row], flags, 2, subsets="chunks"), [(1 + 0 + 0) / 3]
  )


def test_maj_at_k_when_n_equals_k_uses_the_full_set_in_order():
  row = ["5", "6", "6", "5"]
  flags = [[a == "5" for a in row]]
  for mode in ("random", "chunks"):
    np.testing.assert_array_equal(
        voting.maj_at_k([row], flags, 4, subsets=mode, ties="first"), [1.0]
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=3), "question 1 has only n=2"),
        (dict(k=0), "k >= 1"),
        (dict(k=2, subsets="all"), "valid: random, chunks"),
        (dict(k=2, ties="random"), "valid: expected, first"),
    ],
)
def test_maj_at_k_rejects_bad_input(kwargs, match):
  answers = [["1", "2", "3"], ["1", "2"]]
  flags = [[True, False, False], [True, False]]
  with pytest.raises(ValueError, match=match):
    voting.maj_at_k(answers, flags, **kwargs)


def test_maj_at_k_rejects_mismatched_flags():
  with pytest.raises(ValueError, match="question 0: 3 answers but 2"):
    voting.maj_at_k([["1", "2", "3"]], [[True, False]], 2)
  with pytest.raises(ValueError, match="1 questions of answers but 2"):
    voting.maj_at_k([["1", "2"]], [[True, False], [True, True]], 2)


# -------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_the_mean_and_is_deterministic():
  scores = np.random.default_rng(0).binomial(1, 0.3, size=200)
  mean, low, high = stats.bootstrap_ci(scores)
  assert mean == pytest.approx(scores.mean())
  assert low < mean < high
  assert stats.bootstrap_ci(scores, seed=0) == (mean, low, high)
  assert stats.bootstrap_ci(scores, seed=1) != (mean, low, high)


def test_bootstrap_ci_narrows_with_more_questions():
  rng = np.random.default_rng(1)
  widths = []
  for q in (50, 500, 5000):
    _, low, high = stats.bootstrap_ci(rng.binomial(1, 0.5, size=q))
    widths.append(high - low)
  assert widths[0] > widths[1] > widths[2]
  # The percentile interval of a mean of 0/1 scores is close to the normal
  # one, 2 * 1.96 * sqrt(p (1 - p) / Q).
  assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 5000), rel=0.15)


def test_bootstrap_ci_widens_with_confidence_and_handles_constants():
  scores = np.random.default_rng(2).uniform(size=100)
  _, lo90, hi90 = stats.bootstrap_ci(scores, confidence=0.9)
  _, lo99, hi99 = stats.bootstrap_ci(scores, confidence=0.99)
  assert lo99 < lo90 and hi90 < hi99
  assert stats.bootstrap_ci([0.25] * 10) == (0.25, 0.25, 0.25)


def test_bootstrap_ci_blocks_give_the_same_answer(monkeypatch):
  scores = np.random.default_rng(4).uniform(size=37)
  whole = stats.bootstrap_ci(scores, num_resamples=200)
  # Many small blocks draw the same random stream as one big block.
  monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK_ENTRIES", 37 * 3)
  assert stats.bootstrap_ci(scores, num_resamples=200) == whole


@pytest.mark.parametrize(
    "scores,kwargs,match",
    [
        ([], {}, "non-empty"),
        ([[1.0, 0.0]], {}, "shape"),
        ([1.0, np.nan], {}, "non-finite scores at questions \\[1\\]"),
        ([1.0], dict(confidence=1.0), "confidence"),
        ([1.0], dict(num_resamples=0), "num_resamples"),
    ],
)
def test_bootstrap_ci_rejects_bad_input(scores, kwargs, match):
  with pytest.raises(ValueError, match=match):
    stats.bootstrap_ci(scores, **kwargs)


# -------------------------------------------------------------- summarize


def test_summarize_agrees_with_the_parts():
  rng = np.random.default_rng(5)
  answers = [
      [None if x == 0 else str(x) for x in rng.integers(0, 4, size=n)]
      for n in (4, 6, 4, 8, 5)
  ]
  flags = [[a == "1" for a in row] for row in answers]
  greedy = [True, False, True, True, False]
  out = stats.summarize(flags, answers, greedy)
  n = np.array([len(r) for r in flags])
  c = np.array([sum(r) for r in flags])
  assert out["num_questions"] == 5
  assert out["samples_per_question"] == [4, 8]
  assert sorted(out) == sorted(
      [
          "num_questions",
          "samples_per_question",
          "greedy_acc",
          "greedy_acc_ci",
          "pass@1",
          "pass@1_ci",
          "pass@2",
          "pass@2_ci",
          "pass@4",
          "pass@4_ci",
          "maj@2",
          "maj@2_ci",
          "maj@4",
          "maj@4_ci",
      ]
  )
  assert out["greedy_acc"] == pytest.approx(0.6)
  for k in (1, 2, 4):
    assert out[f"pass@{k}"] == pytest.approx(stats.pass_at_k(n, c, k).mean())
    mean, low, high = stats.bootstrap_ci(stats.pass_at_k(n, c, k))
    assert out[f"pass@{k}_ci"] == [low, high]
    assert low <= mean <= high
  assert out["pass@1"] == pytest.approx(np.mean(c / n))
  assert out["maj@4"] == pytest.approx(
      voting.maj_at_k(answers, flags, 4).mean()
  )
  json.dumps(out)  # Loggable as it is.


def test_summarize_explicit_ks_and_partial_inputs():
  flags = [[True, False, False, False]] * 3
  out = stats.summarize(flags, ks=[1, 4])
  assert set(out) == {
      "num_questions",
      "samples_per_question",
      "pass@1",
      "pass@1_ci",
      "pass@4",
      "pass@4_ci",
  }
  assert out["pass@1"] == pytest.approx(0.25)
  assert out["pass@4"] == 1.0
  out = stats.summarize(greedy_correct=[1, 0])
  assert set(out) == {"num_questions", "greedy_acc", "greedy_acc_ci"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "needs sample_correct, answers or greedy_correct"),
        (
            dict(sample_correct=[[True]], greedy_correct=[True, False]),
            "disagree on the number of questions",
        ),
        (dict(sample_correct=[[True, False]], maj_ks=[2]), "needs answers"),
        (dict(answers=[["1"]]), "needs sample_correct"),
        (dict(sample_correct=[[True, False]], ks=[4]), "only n=2"),
    ],
)
def test_summarize_rejects_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    stats.summarize(**kwargs)


# -------------------------------------------------------------------- AUC


def test_auc_known_cases():
  # Positives win 4 of the 6 (positive, negative) pairs and tie one.
  assert stats.auc([0.9, 0.5, 0.5, 0.1, 0.7], [1, 1, 0, 0, 0]) == (
      pytest.approx(4.5 / 6)
  )
  assert stats.auc([3.0, 2.0, 1.0], [1, 1, 0]) == 1.0
  assert stats.auc([1.0, 2.0, 3.0], [1, 1, 0]) == 0.0
  assert stats.auc([1.0, 1.0], [1, 0]) == 0.5
  assert math.isnan(stats.auc([1.0, 2.0], [1, 1]))
  rng = np.random.default_rng(0)
  scores, labels = rng.normal(size=50), rng.random(50) > 0.5
  pairs = [
      (s > t) + 0.5 * (s == t)
      for s, a in zip(scores, labels)
      if a
      for t, b in zip(scores, labels)
      if not b
  ]
  assert stats.auc(scores, labels) == pytest.approx(np.mean(pairs))
