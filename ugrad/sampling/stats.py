"""Statistics of evaluations: pass@k, maj@k, bootstrap intervals, ROC AUC.

Plain numpy, no JAX. Every metric is computed per question first, so that
one percentile bootstrap over questions gives a confidence interval for any
of them: callers pass, per question, the sampled final answers (None where
the answer failed to parse) and the correctness of each sample.

References:
  Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
    arXiv 2107.03374, section 2.1 (the unbiased pass@k estimator).
  Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in
    Language Models", arXiv 2203.11171 (majority vote over sampled answers).
  Efron and Tibshirani 1993, "An Introduction to the Bootstrap", chapter 13
    (the percentile interval).
"""

import itertools
import math
import operator
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ugrad import errors
from ugrad import registry

# Memory cap for one block of bootstrap resample indices (int64 entries).
_BOOTSTRAP_BLOCK_ENTRIES = 1 << 22

Answer = Any  # An extracted final answer; None means it failed to parse.
Equivalence = Callable[[Answer, Answer], bool]
Checker = Callable[[int, Answer], bool]


def _as_int_array(name: str, x) -> np.ndarray:
  """`x` as an int64 array, refusing non-integral values."""
  arr = np.asarray(x)
  if arr.dtype == bool or not (
      np.issubdtype(arr.dtype, np.integer)
      or np.issubdtype(arr.dtype, np.floating)
  ):
    raise errors.UserError(f"{name} must hold integers, got dtype {arr.dtype}")
  if np.issubdtype(arr.dtype, np.floating):
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
      raise errors.UserError(f"{name} must hold integers, got {arr!r}")
  return arr.astype(np.int64)


def pass_at_k(n, c, k: int) -> np.ndarray:
  """Unbiased pass@k estimate per question (Chen et al. 2021, eq. 1).

  pass@k = 1 - C(n - c, k) / C(n, k): the probability that at least one of k
  samples drawn without replacement from the n generated ones is correct. The
  ratio of binomials is evaluated as prod_{i=n-c+1}^{n} (1 - k / i), which
  neither overflows nor loses precision for large n.

  Args:
    n: [Q] (or scalar) number of samples generated per question.
    c: [Q] (or scalar) number of correct samples per question; broadcast
      against `n`.
    k: the number of attempts, 1 <= k <= n for every question.

  Returns:
    [Q] float64 estimates in [0, 1] (a 0-d value for scalar inputs).

  Raises:
    ValueError: if k < 1, k > n, c < 0 or c > n for some question.
  """
  k_arr = _as_int_array("k", k)
  if k_arr.ndim != 0:
    raise errors.UserError(
        f"k must be a single integer, got shape {k_arr.shape}"
    )
  k = int(k_arr)
  n, c = np.broadcast_arrays(_as_int_array("n", n), _as_int_array("c", c))
  if k < 1:
    raise errors.UserError(f"pass@k needs k >= 1, got k={k}")
  if np.any(k > n):
    q = int(np.argmax(np.ravel(k > n)))
    raise errors.UserError(
        f"pass@k needs k <= n, got k={k} but question {q} has only "
        f"n={int(np.ravel(n)[q])} samples"
    )
  bad = (c < 0) | (c > n)
  if np.any(bad):
    q = int(np.argmax(np.ravel(bad)))
    raise errors.UserError(
        f"pass@k needs 0 <= c <= n, question {q} has c={int(np.ravel(c)[q])}"
        f", n={int(np.ravel(n)[q])}"
    )
  flat_n, flat_c = np.ravel(n), np.ravel(c)
  width = int(flat_c.max(initial=0))
  # Row q multiplies (1 - k/i) for i = n-c+1 .. n; the padding factor is 1.
  # With fewer than k incorrect samples the range holds i = k, whose factor
  # is exactly 0, so such rows give exactly 1 with no special case.
  offsets = np.arange(width)[None, :]
  i = (flat_n - flat_c + 1)[:, None] + offsets
  factors = np.where(offsets < flat_c[:, None], 1.0 - k / i, 1.0)
  estimate = 1.0 - np.prod(factors, axis=1)
  return estimate.reshape(n.shape)[()]


def _group_answers(
    answers: Sequence[Answer], equivalent: Equivalence
) -> tuple[np.ndarray, list[int]]:
  """Clusters equivalent answers; each group keeps its first member.

  An answer joins the first group whose representative (earliest member) it is
  equivalent to, so a non-transitive `equivalent` (such as math-verify) still
  gives one deterministic grouping.

  Args:
    answers: [n] extracted answers, None for unparsable ones.
    equivalent: (a, b) -> bool.

  Returns:
    (labels, representatives): [n] group index per answer (-1 for None), and
    the sample index of each group's representative.
  """
  labels = np.full(len(answers), -1, dtype=np.int64)
  representatives: list[int] = []
  for i, answer in enumerate(answers):
    if answer is None:
      continue
    for g, r in enumerate(representatives):
      if equivalent(answers[r], answer):
        labels[i] = g
        break
    else:
      labels[i] = len(representatives)
      representatives.append(i)
  return labels, representatives


def _random_subsets(
    n: int, k: int, num_subsets: int, rng: np.random.Generator
) -> np.ndarray:
  """[S, k] sample indices, in sample order: all C(n, k) subsets when there
  are at most `num_subsets` of them, else `num_subsets` uniform draws."""
  if math.comb(n, k) <= num_subsets:
    return np.array(list(itertools.combinations(range(n), k)), np.int64)
  perms = rng.permuted(np.tile(np.arange(n), (num_subsets, 1)), axis=1)
  return np.sort(perms[:, :k], axis=1)


def _chunk_subsets(
    n: int, k: int, num_subsets: int, rng: np.random.Generator
) -> np.ndarray:
  """[n // k, k] consecutive disjoint chunks; leftover samples are unused."""
  del num_subsets, rng  # Deterministic by construction.
  return np.arange(n // k * k, dtype=np.int64).reshape(-1, k)


SUBSETS = {"random": _random_subsets, "chunks": _chunk_subsets}


def _expected_over_ties(
    tied: np.ndarray, group_correct: np.ndarray, first_pos: np.ndarray
) -> np.ndarray:
  """[S] accuracy of a uniformly random pick among the tied top groups."""
  del first_pos
  hits = np.sum(tied & group_correct[None, :], axis=1)
  return hits / np.maximum(np.sum(tied, axis=1), 1)


def _first_seen_among_ties(
    tied: np.ndarray, group_correct: np.ndarray, first_pos: np.ndarray
) -> np.ndarray:
  """[S] correctness of the tied top group that appears first in the subset."""
  never = np.iinfo(np.int64).max
  winner = np.argmin(np.where(tied, first_pos, never), axis=1)
  return (group_correct[winner] & np.any(tied, axis=1)).astype(np.float64)


TIE_BREAKS = {"expected": _expected_over_ties, "first": _first_seen_among_ties}


def _vote(
    labels: np.ndarray,
    group_correct: np.ndarray,
    subsets: np.ndarray,
    tie_break,
) -> float:
  """Mean over subsets of the correctness of the majority answer.

  Args:
    labels: [n] group index per sample, -1 for samples that do not vote.
    group_correct: [G] bool, correctness of each group.
    subsets: [S, k] sample indices.
    tie_break: one of TIE_BREAKS.

  Returns:
    The mean over the S subsets, 0 for a subset in which nobody votes.
  """
  num_groups = group_correct.shape[0]
  if num_groups == 0:
    return 0.0
  hit = subsets.shape[1]
  member = labels[subsets][:, :, None] == np.arange(num_groups)  # [S, k, G]
  counts = np.sum(member, axis=1)  # [S, G]
  top = np.max(counts, axis=1, keepdims=True)
  tied = (counts == top) & (top > 0)
  position = np.arange(hit)[None, :, None]
  first_pos = np.min(np.where(member, position, hit), axis=1)  # [S, G]
  return float(np.mean(tie_break(tied, group_correct, first_pos)))


def _group_correctness(
    q: int,
    answers: Sequence[Answer],
    representatives: list[int],
    correct: Union[Sequence[Sequence[bool]], Checker],
):
  """[G] bool: the correctness of each group's representative answer."""
  if callable(correct):
    flags = [bool(correct(q, answers[r])) for r in representatives]
  else:
    row = correct[q]
    if len(row) != len(answers):
      raise errors.UserError(
          f"question {q}: {len(answers)} answers but {len(row)} correctness "
          "flags"
      )
    flags = [bool(row[r]) for r in representatives]
  return np.array(flags, dtype=bool)


def maj_at_k(
    answers: Sequence[Sequence[Answer]],
    correct: Union[Sequence[Sequence[bool]], Checker],
    k: int,
    *,
    equivalent: Equivalence = operator.eq,
    subsets: str = "random",
    num_subsets: int = 64,
    ties: str = "expected",
    seed: int = 0,
) -> np.ndarray:
  """Majority-vote accuracy per question (self-consistency, Wang et al. 2023).

  Per question, the parsed answers are clustered with `equivalent` (string
  equality for the embedded task, math-verify for real data); answers that
  failed to parse (None) do not vote, and a subset in which nobody votes
  scores 0. The most frequent group wins and scores the correctness of its
  first member (flags or `correct(q, answer)` are consulted once per group).

  Ties between top groups (`ties`):
    "expected": the accuracy of a uniformly random choice among the tied
      groups, i.e. the expectation over tie-breaks (default: no arbitrary
      ordering leaks into the score).
    "first": the tied group whose earliest vote comes first in sample order
      (what `collections.Counter.most_common` does).

  With n > k samples (`subsets`), the score estimates the expectation over
  all k-subsets of the pool, i.e. maj@k of a run that drew only k samples:
    "random": every k-subset when there are at most `num_subsets` of them
      (the exact expectation), else `num_subsets` uniformly random k-subsets
      drawn by a generator seeded with (seed, question index), so a score
      depends on the question's position but not on other questions. For
      n == k this is the full set, in sample order.
    "chunks": the n // k consecutive disjoint chunks of k samples.

  Args:
    answers: [Q][n] extracted final answers (n may differ between questions;
      n >= k), None where extraction failed.
    correct: [Q][n] per-sample correctness flags, or a checker
      `(question_index, answer) -> bool`.
    k: votes per subset, k >= 1.
    equivalent: (a, b) -> bool, deciding when two answers are the same.
    subsets: "random" or "chunks".
    num_subsets: the cap on subsets per question for "random".
    ties: "expected" or "first".
    seed: seed of the "random" subsets.

  Returns:
    [Q] float64 per-question maj@k in [0, 1].

  Raises:
    ValueError: for k < 1, a question with fewer than k samples, mismatched
      flag lengths, or an unknown `subsets` / `ties` name.
  """
  make_subsets = registry.lookup(SUBSETS, "subsets mode", subsets)
  tie_break = registry.lookup(TIE_BREAKS, "tie-break", ties)
  if k < 1:
    raise errors.UserError(f"maj@k needs k >= 1, got k={k}")
  if num_subsets < 1:
    raise errors.UserError(f"num_subsets must be >= 1, got {num_subsets}")
  if not callable(correct) and len(correct) != len(answers):
    raise errors.UserError(
        f"{len(answers)} questions of answers but "
        f"{len(correct)} of correctness flags"
    )
  scores = np.zeros(len(answers))
  for q, row in enumerate(answers):
    if len(row) < k:
      raise errors.UserError(
          f"maj@k needs k <= n, got k={k} but question {q} has only "
          f"n={len(row)} samples"
      )
    labels, representatives = _group_answers(row, equivalent)
    group_correct = _group_correctness(q, row, representatives, correct)
    rng = np.random.default_rng((seed, q))
    chosen = make_subsets(len(row), k, num_subsets, rng)
    scores[q] = _vote(labels, group_correct, chosen, tie_break)
  return scores


def bootstrap_ci(
    per_question_scores,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
  """Mean and percentile-bootstrap interval over questions.

  Questions are resampled with replacement `num_resamples` times; the interval
  is the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the
  resampled means. The same seed and number of questions give the same
  resamples, so intervals of different metrics on one question set are
  paired.

  Args:
    per_question_scores: [Q] finite scores, Q >= 1.
    confidence: the interval's nominal coverage, in (0, 1).
    num_resamples: the number of bootstrap resamples, >= 1.
    seed: seed of the resampling.

  Returns:
    (mean, low, high): the sample mean and the interval's bounds, as floats.

  Raises:
    ValueError: for empty, non-1-D or non-finite scores, or bad settings.
  """
  scores = np.asarray(per_question_scores, dtype=np.float64)
  if scores.ndim != 1 or scores.size == 0:
    raise errors.UserError(
        f"bootstrap_ci needs a non-empty [Q] array, got shape {scores.shape}"
    )
  if not np.all(np.isfinite(scores)):
    raise errors.UserError(
        "bootstrap_ci got non-finite scores at questions "
        f"{np.flatnonzero(~np.isfinite(scores))[:10].tolist()}"
    )
  if not 0.0 < confidence < 1.0:
    raise errors.UserError(f"confidence must be in (0, 1), got {confidence}")
  if num_resamples < 1:
    raise errors.UserError(f"num_resamples must be >= 1, got {num_resamples}")
  num_questions = scores.size
  rng = np.random.default_rng(seed)
  block = max(1, _BOOTSTRAP_BLOCK_ENTRIES // num_questions)
  means = []
  for start in range(0, num_resamples, block):
    rows = min(block, num_resamples - start)
    idx = rng.integers(0, num_questions, size=(rows, num_questions))
    means.append(scores[idx].mean(axis=1))
  tail = (1.0 - confidence) / 2.0
  low, high = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
  return float(scores.mean()), float(low), float(high)


def _default_ks(min_samples: int) -> list[int]:
  """1, 2, 4, ... up to the smallest per-question sample count."""
  if min_samples < 1:
    raise errors.UserError("a question has no samples; pass@k needs n >= 1")
  return [2**e for e in range(int(math.log2(min_samples)) + 1)]


def summarize(
    sample_correct: Optional[Sequence[Sequence[bool]]] = None,
    answers: Optional[Sequence[Sequence[Answer]]] = None,
    greedy_correct: Optional[Sequence[bool]] = None,
    *,
    ks: Optional[Sequence[int]] = None,
    maj_ks: Optional[Sequence[int]] = None,
    equivalent: Equivalence = operator.eq,
    subsets: str = "random",
    num_subsets: int = 64,
    ties: str = "expected",
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
  """Greedy accuracy, pass@k and maj@k, each with a bootstrap interval.

  Args:
    sample_correct: [Q][n] correctness of each sampled answer, or None.
    answers: [Q][n] extracted sampled answers (None = unparsable), needed for
      maj@k.
    greedy_correct: [Q] correctness of the greedy answer, or None.
    ks: pass@k values of k; default 1, 2, 4, ... up to the smallest n.
    maj_ks: maj@k values of k (needs `answers`); default the ks above 1.
    equivalent, subsets, num_subsets, ties: as in `maj_at_k`.
    confidence, num_resamples, seed: as in `bootstrap_ci`; `seed` also seeds
      the maj@k subsets.

  Returns:
    A JSON-ready dict: "num_questions", and for each metric m among
    "greedy_acc", "pass@k", "maj@k" both m (the mean over questions) and
    m + "_ci" ([low, high]); "samples_per_question" ([min, max] of n) when
    samples are given.

  Raises:
    ValueError: if nothing is given, question counts disagree, or maj@k is
      asked for without answers.
  """
  given = [
      x for x in (sample_correct, answers, greedy_correct) if x is not None
  ]
  if not given:
    raise errors.UserError(
        "summarize needs sample_correct, answers or " "greedy_correct"
    )
  num_questions = {len(x) for x in given}
  if len(num_questions) != 1:
    raise errors.UserError(
        f"inputs disagree on the number of questions: "
        f"{sorted(num_questions)}"
    )
  if answers is not None and sample_correct is None:
    raise errors.UserError("maj@k needs sample_correct alongside answers")
  if maj_ks and answers is None:
    raise errors.UserError(f"maj@k for k in {list(maj_ks)} needs answers")
  out: dict[str, Any] = {"num_questions": num_questions.pop()}

  def add(name: str, per_question: np.ndarray):
    mean, low, high = bootstrap_ci(
        per_question, confidence, num_resamples, seed
    )
    out[name] = mean
    out[name + "_ci"] = [low, high]

  if greedy_correct is not None:
    add("greedy_acc", np.asarray(greedy_correct, dtype=np.float64))
  if sample_correct is None:
    return out
  n = np.array([len(row) for row in sample_correct], dtype=np.int64)
  c = np.array(
      [int(np.sum(np.asarray(row, dtype=bool))) for row in sample_correct],
      dtype=np.int64,
  )
  out["samples_per_question"] = [int(n.min()), int(n.max())]
  ks = _default_ks(int(n.min())) if ks is None else list(ks)
  for k in ks:
    add(f"pass@{k}", pass_at_k(n, c, k))
  if answers is None:
    return out
  maj_ks = [k for k in ks if k > 1] if maj_ks is None else list(maj_ks)
  for k in maj_ks:
    add(
        f"maj@{k}",
        maj_at_k(
            answers,
            sample_correct,
            k,
            equivalent=equivalent,
            subsets=subsets,
            num_subsets=num_subsets,
            ties=ties,
            seed=seed,
        ),
    )
  return out


def parse_ks(values: Sequence[str], name: str) -> list[int]:
  """Sorted distinct positive ints from strings such as ["1", " 4"]; blank
  entries are skipped, so an empty list gives [].

  Raises:
    ValueError: naming `name` (the flag or field), for an entry that is not
      a positive integer.
  """
  ks = []
  for v in filter(None, (v.strip() for v in values)):
    try:
      k = int(v)
    except ValueError:
      raise errors.UserError(f"{name}: {v!r} is not an integer") from None
    if k < 1:
      raise errors.UserError(f"{name}: every k must be >= 1, got {k}")
    ks.append(k)
  return sorted(set(ks))


def auc(scores, labels) -> float:
  """Area under the ROC curve: P(score of a positive > score of a negative).

  Ties count one half (the Mann-Whitney U statistic with average ranks).

  Args:
    scores: [N] real scores.
    labels: [N] booleans (or 0/1).

  Returns:
    The AUC, or NaN when the labels hold only one class.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1) > 0.5
  if scores.shape != labels.shape:
    raise errors.UserError(
        f"auc: {scores.shape[0]} scores but {labels.shape[0]} " "labels"
    )
  pos, neg = int(labels.sum()), int((~labels).sum())
  if pos == 0 or neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average rank over each run of tied scores.
  starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])
  ends = np.r_[starts[1:], len(scores)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
