"""Statistics of evaluations: pass@k, bootstrap intervals, summaries, ROC AUC.

Plain numpy, no JAX. Every metric is computed per question first, so that
one percentile bootstrap over questions gives a confidence interval for any
of them: callers pass, per question, the sampled final answers (None where
the answer failed to parse) and the correctness of each sample. maj@k itself
lives in `ugrad.sampling.voting`; `summarize` reports it here.

References:
  Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
    arXiv 2107.03374, section 2.1 (the unbiased pass@k estimator).
  Efron and Tibshirani 1993, "An Introduction to the Bootstrap", chapter 13
    (the percentile interval).
"""

import math
import operator
from typing import Any, Optional, Sequence

import numpy as np

from ugrad import errors
from ugrad.sampling import voting

# Memory cap for one block of bootstrap resample indices (int64 entries).
_BOOTSTRAP_BLOCK_ENTRIES = 1 << 22


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
    answers: Optional[Sequence[Sequence[voting.Answer]]] = None,
    greedy_correct: Optional[Sequence[bool]] = None,
    *,
    ks: Optional[Sequence[int]] = None,
    maj_ks: Optional[Sequence[int]] = None,
    equivalent: voting.Equivalence = operator.eq,
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
    equivalent, subsets, num_subsets, ties: as in `voting.maj_at_k`.
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
        voting.maj_at_k(
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
