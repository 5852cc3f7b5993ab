"""Arithmetic problems as numpy arrays: sampling, enumeration, splits.

* An operand with d digits is uniform over the d-digit numbers (0-9 for one
  digit, no leading zeros); the digit count of each operand is uniform over
  the `digits` range.
* Evaluation is strictly left to right (no operator precedence); running
  values may be negative unless `allow_negative=False`, which drops every
  problem with a negative intermediate.
* A question belongs to the test split when a fixed hash of the question
  (its operands and operators, no seed) falls below `test_fraction`, so the
  splits are disjoint for every seed and every difficulty.
* Everything is vectorised: 200k problems take tens of milliseconds, so
  nothing is cached on disk.
"""

import dataclasses

import numpy as np

from ugrad import errors

OPERATORS = "+-*"
_APPLY = {"+": np.add, "-": np.subtract, "*": np.multiply}
# Question spaces up to this size are enumerated exactly for the test split.
_ENUMERATE_LIMIT = 1 << 20
_MAX_ROUNDS = 64


@dataclasses.dataclass(frozen=True)
class Problems:
  """N problems of K operands as arrays.

  Attributes:
    operands: int64 [N, K], each >= 0.
    ops: uint8 [N, K - 1], ASCII codes of the operators ('+', '-', '*').
    results: int64 [N, K - 1], the running value after each step; the last
      column is the answer.
  """

  operands: np.ndarray
  ops: np.ndarray
  results: np.ndarray

  def __len__(self) -> int:
    return self.operands.shape[0]

  def select(self, mask_or_index: np.ndarray) -> "Problems":
    return Problems(
        self.operands[mask_or_index],
        self.ops[mask_or_index],
        self.results[mask_or_index],
    )


def _concat(parts: list[Problems]) -> Problems:
  return Problems(
      *(
          np.concatenate([getattr(p, f.name) for p in parts])
          for f in dataclasses.fields(Problems)
      )
  )


def _running_results(operands: np.ndarray, ops: np.ndarray) -> np.ndarray:
  """Left-to-right running values: int64 [N, K - 1] from [N, K], [N, K - 1]."""
  value = operands[:, 0]
  results = np.empty(ops.shape, np.int64)
  for k in range(ops.shape[1]):
    nxt = np.zeros_like(value)
    for sym, fn in _APPLY.items():
      sel = ops[:, k] == ord(sym)
      nxt = np.where(sel, fn(value, operands[:, k + 1]), nxt)
    value = results[:, k] = nxt
  return results


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def question_hash(problems: Problems) -> np.ndarray:
  """A hash of each question's text, uint64 [N]; independent of any seed."""
  n, k = problems.operands.shape
  h = _mix(np.full(n, k, np.uint64))
  for j in range(k):
    h = _mix(h ^ problems.operands[:, j].astype(np.uint64))
    if j < k - 1:
      h = _mix(h ^ problems.ops[:, j].astype(np.uint64))
  return h


def question_unit(problems: Problems) -> np.ndarray:
  """float [N] in [0, 1): each question's fixed place in the split order
  (a hash of the question alone, no seed)."""
  unit = (question_hash(problems) >> np.uint64(11)).astype(np.float64)
  return unit * 2.0**-53


def is_test_question(problems: Problems, test_fraction: float) -> np.ndarray:
  """bool [N]: whether each question belongs to the test split."""
  return question_unit(problems) < test_fraction


def in_band(problems: Problems, band: tuple[float, float]) -> np.ndarray:
  """bool [N]: whether each question's unit is in [lo, hi)."""
  unit = question_unit(problems)
  return (unit >= band[0]) & (unit < band[1])


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The difficulty knobs.

  Attributes:
    num_operands: K >= 2 operands per question (K - 1 steps).
    digits: (lo, hi), each operand has between lo and hi digits.
    operators: the operators drawn from, a subset of "+-*".
    allow_negative: whether intermediate results may be negative.
  """

  num_operands: int = 3
  digits: tuple[int, int] = (1, 2)
  operators: str = "+-"
  allow_negative: bool = True

  def __post_init__(self):
    if self.num_operands < 2:
      raise errors.UserError(
          f"num_operands must be >= 2, got {self.num_operands}"
      )
    lo, hi = self.digits
    if not 1 <= lo <= hi:
      raise errors.UserError(
          f"digits must satisfy 1 <= lo <= hi, got {self.digits}"
      )
    if self.num_operands * hi > 18:
      raise errors.UserError(
          f"{self.num_operands} operands of {hi} digits may overflow int64; "
          "need num_operands * max digits <= 18"
      )
    bad = [c for c in self.operators if c not in OPERATORS]
    if (
        bad
        or not self.operators
        or len(set(self.operators)) != len(self.operators)
    ):
      raise errors.UserError(
          f"operators must be distinct characters from {OPERATORS!r}, got "
          f"{self.operators!r}"
      )

  def operand_values(self) -> np.ndarray:
    """Every possible operand value, int64 [M], ascending."""
    lo, hi = self.digits
    start = 0 if lo == 1 else 10 ** (lo - 1)
    return np.arange(start, 10**hi, dtype=np.int64)

  def space_size(self) -> int:
    """The number of distinct questions."""
    k = self.num_operands
    return len(self.operand_values()) ** k * len(self.operators) ** (k - 1)


def _keep(problems: Problems, difficulty: Difficulty) -> np.ndarray:
  if difficulty.allow_negative:
    return np.ones(len(problems), bool)
  return (problems.results >= 0).all(axis=1)


def sample_problems(
    rng: np.random.Generator, n: int, difficulty: Difficulty
) -> Problems:
  """N problems drawn i.i.d. (either split; the caller filters).

  Args:
    rng: numpy generator.
    n: number of problems.
    difficulty: the knobs.

  Returns:
    Problems with N rows.
  """
  k = difficulty.num_operands
  lo, hi = difficulty.digits
  ndig = rng.integers(lo, hi + 1, size=(n, k))
  low = np.where(ndig == 1, 0, 10 ** (ndig - 1))
  operands = rng.integers(low, 10**ndig, dtype=np.int64)
  codes = np.frombuffer(difficulty.operators.encode(), np.uint8)
  ops = codes[rng.integers(0, len(codes), size=(n, k - 1))]
  return Problems(operands, ops, _running_results(operands, ops))


def enumerate_problems(difficulty: Difficulty) -> Problems:
  """Every distinct question of `difficulty` (for small question spaces)."""
  k = difficulty.num_operands
  values = difficulty.operand_values()
  codes = np.frombuffer(difficulty.operators.encode(), np.uint8)
  rest = np.arange(difficulty.space_size(), dtype=np.int64)
  operands = np.empty((rest.size, k), np.int64)
  ops = np.empty((rest.size, k - 1), np.uint8)
  for j in range(k):
    rest, operands[:, j] = np.divmod(rest, len(values))
    operands[:, j] = values[operands[:, j]]
  for j in range(k - 1):
    rest, idx = np.divmod(rest, len(codes))
    ops[:, j] = codes[idx]
  return Problems(operands, ops, _running_results(operands, ops))


def _first_unique(problems: Problems) -> Problems:
  """Drops repeated questions, keeping first occurrences in order."""
  _, first = np.unique(question_hash(problems), return_index=True)
  return problems.select(np.sort(first))


def draw_test_problems(
    seed: int, n: int, difficulty: Difficulty, test_fraction: float
) -> Problems:
  """Up to N distinct test questions (units in [0, test_fraction))."""
  return draw_held_out_problems(
      seed, n, difficulty, (0.0, test_fraction), stream=1, split="test"
  )


def draw_held_out_problems(
    seed: int,
    n: int,
    difficulty: Difficulty,
    band: tuple[float, float],
    stream: int,
    split: str,
) -> Problems:
  """Up to N distinct questions whose units lie in `band`, deterministic
  given `seed` and `stream` (one per split).

  Small question spaces are enumerated, so the split then holds
  min(N, every question of the band) problems, uniform over distinct
  questions. Large spaces are sampled like training problems, repeats
  dropped.
  """
  rng = np.random.default_rng([seed, stream])
  if difficulty.space_size() <= _ENUMERATE_LIMIT:
    every = enumerate_problems(difficulty)
    every = every.select(in_band(every, band) & _keep(every, difficulty))
    return every.select(rng.permutation(len(every))[:n])
  found = None
  width = band[1] - band[0]
  for _ in range(_MAX_ROUNDS):
    draw = sample_problems(rng, int(2 * n / width) + 64, difficulty)
    draw = draw.select(in_band(draw, band) & _keep(draw, difficulty))
    found = _first_unique(draw if found is None else _concat([found, draw]))
    if len(found) >= n:
      return found.select(slice(0, n))
  raise errors.UserError(
      f"found only {len(found)} of {n} distinct {split} questions; raise "
      f"its fraction or lower n_{split}"
  )


def draw_train_problems(
    seed: int, n: int, difficulty: Difficulty, held_out_fraction: float
) -> Problems:
  """N training problems (repeats allowed), none of them held out (test
  or validation: units below `held_out_fraction`)."""
  rng = np.random.default_rng([seed, 0])
  parts, have = [], 0
  for _ in range(_MAX_ROUNDS):
    draw = sample_problems(rng, int(1.25 * (n - have)) + 64, difficulty)
    draw = draw.select(
        ~is_test_question(draw, held_out_fraction) & _keep(draw, difficulty)
    )
    parts.append(draw)
    have += len(draw)
    if have >= n:
      return _concat(parts).select(slice(0, n))
  raise errors.UserError(
      f"drew only {have} of {n} training problems; allow_negative=False "
      "may reject almost every problem of this difficulty"
  )
