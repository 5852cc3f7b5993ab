"""Majority vote over sampled answers: maj@k (self-consistency).

Per question, the parsed final answers are clustered with an equivalence
function, k-subsets of the samples are drawn (all of them, random ones or
consecutive chunks), each subset votes, and the winning group's correctness is
averaged over subsets, with a choice of how ties between top groups score.
Plain numpy, no JAX; `ugrad.sampling.stats` builds its summaries on it.

References:
  Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in
    Language Models", arXiv 2203.11171 (majority vote over sampled answers).
"""

import itertools
import math
import operator
from typing import Any, Callable, Sequence, Union

import numpy as np

from ugrad import errors
from ugrad import registry

Answer = Any  # An extracted final answer; None means it failed to parse.
Equivalence = Callable[[Answer, Answer], bool]
Checker = Callable[[int, Answer], bool]


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
