"""The embedded task: multi-step arithmetic with written-out steps.

    question:  48+27-19=
    solution:  48+27=75
               75-19=56
    answer:    56            (the completion ends with the line "#### 56")

Conventions:
* Evaluation is strictly left to right, as the steps are written: "2+3*4="
  is 2+3=5, 5*4=20 (no operator precedence).
* Intermediate results may be negative and are written with a leading minus,
  e.g. "3-45=-42" then "-42+12=-30". `allow_negative=False` instead drops
  every problem with a negative intermediate.
* An operand with d digits is uniform over the d-digit numbers (0-9 for one
  digit, no leading zeros); the digit count of each operand is uniform over
  the `digits` range.
* A question belongs to the test split when a fixed hash of its text falls
  below `test_fraction`, so the two splits are disjoint for every seed and
  every difficulty; the seed only chooses which problems are drawn.
* Problems are held as numpy arrays and turned into text only when an
  example is read, so drawing hundreds of thousands costs milliseconds.
"""

import dataclasses
import functools
import re
from typing import Optional, Sequence, Union

import numpy as np

from ugrad.tasks import base
from ugrad.tasks.tokenizer import CharTokenizer, Tokenizer

OPERATORS = "+-*"
_APPLY = {"+": np.add, "-": np.subtract, "*": np.multiply}
_PY_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
             "*": lambda a, b: a * b}
STEP_RULES = ("prefix", "local")
# Question spaces up to this size are enumerated exactly for the test split.
_ENUMERATE_LIMIT = 1 << 20
_MAX_ROUNDS = 64

_QUESTION_RE = re.compile(r"(\d+)((?:[+\-*]\d+)+)=")
_STEP_RE = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)")
_ANSWER_RE = re.compile(r"####\s*(-?\d+)")


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
    return Problems(self.operands[mask_or_index], self.ops[mask_or_index],
                    self.results[mask_or_index])


def _concat(parts: list[Problems]) -> Problems:
  return Problems(*(np.concatenate([getattr(p, f.name) for p in parts])
                    for f in dataclasses.fields(Problems)))


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


def is_test_question(problems: Problems, test_fraction: float) -> np.ndarray:
  """bool [N]: whether each question belongs to the test split."""
  unit = (question_hash(problems) >> np.uint64(11)).astype(np.float64)
  return unit * 2.0**-53 < test_fraction


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
      raise ValueError(f"num_operands must be >= 2, got {self.num_operands}")
    lo, hi = self.digits
    if not 1 <= lo <= hi:
      raise ValueError(f"digits must satisfy 1 <= lo <= hi, got {self.digits}")
    if self.num_operands * hi > 18:
      raise ValueError(
          f"{self.num_operands} operands of {hi} digits may overflow int64; "
          "need num_operands * max digits <= 18")
    bad = [c for c in self.operators if c not in OPERATORS]
    if bad or not self.operators or len(set(self.operators)) != len(
        self.operators):
      raise ValueError(
          f"operators must be distinct characters from {OPERATORS!r}, got "
          f"{self.operators!r}")

  def operand_values(self) -> np.ndarray:
    """Every possible operand value, int64 [M], ascending."""
    lo, hi = self.digits
    start = 0 if lo == 1 else 10**(lo - 1)
    return np.arange(start, 10**hi, dtype=np.int64)

  def space_size(self) -> int:
    """The number of distinct questions."""
    k = self.num_operands
    return len(self.operand_values())**k * len(self.operators)**(k - 1)


def _keep(problems: Problems, difficulty: Difficulty) -> np.ndarray:
  if difficulty.allow_negative:
    return np.ones(len(problems), bool)
  return (problems.results >= 0).all(axis=1)


def sample_problems(rng: np.random.Generator, n: int,
                    difficulty: Difficulty) -> Problems:
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
  low = np.where(ndig == 1, 0, 10**(ndig - 1))
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


def draw_test_problems(seed: int, n: int, difficulty: Difficulty,
                  test_fraction: float) -> Problems:
  """Up to N distinct test questions, deterministic given `seed`.

  Small question spaces are enumerated, so the split then holds
  min(N, every test question) problems, uniform over distinct questions.
  Large spaces are sampled like training problems, repeats dropped.
  """
  rng = np.random.default_rng([seed, 1])
  if difficulty.space_size() <= _ENUMERATE_LIMIT:
    every = enumerate_problems(difficulty)
    every = every.select(is_test_question(every, test_fraction)
                         & _keep(every, difficulty))
    return every.select(rng.permutation(len(every))[:n])
  found = None
  for _ in range(_MAX_ROUNDS):
    draw = sample_problems(rng, int(2 * n / test_fraction) + 64, difficulty)
    draw = draw.select(is_test_question(draw, test_fraction)
                       & _keep(draw, difficulty))
    found = _first_unique(draw if found is None else _concat([found, draw]))
    if len(found) >= n:
      return found.select(slice(0, n))
  raise ValueError(
      f"found only {len(found)} of {n} distinct test questions; raise "
      "test_fraction or lower n_test")


def draw_train_problems(seed: int, n: int, difficulty: Difficulty,
                   test_fraction: float) -> Problems:
  """N training problems (repeats allowed), none of them a test question."""
  rng = np.random.default_rng([seed, 0])
  parts, have = [], 0
  for _ in range(_MAX_ROUNDS):
    draw = sample_problems(rng, int(1.25 * (n - have)) + 64, difficulty)
    draw = draw.select(~is_test_question(draw, test_fraction)
                       & _keep(draw, difficulty))
    parts.append(draw)
    have += len(draw)
    if have >= n:
      return _concat(parts).select(slice(0, n))
  raise ValueError(
      f"drew only {have} of {n} training problems; allow_negative=False "
      "may reject almost every problem of this difficulty")


def format_question(operands: Sequence[int], ops: str) -> str:
  parts = [str(operands[0])]
  for op, b in zip(ops, operands[1:]):
    parts += [op, str(b)]
  return "".join(parts) + "="


def format_steps(operands: Sequence[int], ops: str,
                 results: Sequence[int]) -> str:
  lines, prev = [], operands[0]
  for op, b, r in zip(ops, operands[1:], results):
    lines.append(f"{prev}{op}{b}={r}")
    prev = r
  return "\n".join(lines)


class ArithmeticExamples(Sequence[base.Example]):
  """Examples backed by `Problems` arrays; text is built on access."""

  def __init__(self, problems: Problems):
    self.problems = problems

  def __len__(self) -> int:
    return len(self.problems)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return ArithmeticExamples(self.problems.select(i))
    p = self.problems
    operands = p.operands[i].tolist()
    ops = p.ops[i].tobytes().decode()
    results = p.results[i].tolist()
    return base.Example(
        question=format_question(operands, ops),
        solution=format_steps(operands, ops, results),
        answer=str(results[-1]))


@functools.lru_cache(maxsize=65536)
def parse_question(question: str) -> tuple[tuple[int, ...], str]:
  """(operands, operators) of a question such as "48+27-19="."""
  m = _QUESTION_RE.fullmatch(question.strip())
  if m is None:
    raise ValueError(f"not an arithmetic question: {question!r}")
  operands = [int(m.group(1))]
  ops = ""
  for op, b in re.findall(r"([+\-*])(\d+)", m.group(2)):
    ops += op
    operands.append(int(b))
  return tuple(operands), ops


def final_answer(completion: str) -> Optional[int]:
  """The integer after the first "####" (rest of that line), else None."""
  at = completion.find("####")
  if at < 0:
    return None
  line = completion[at:].split("\n", 1)[0]
  m = _ANSWER_RE.fullmatch(line.strip())
  return int(m.group(1)) if m else None


def step_labels(question: str, completion: str,
                rule: str = "prefix") -> list[bool]:
  """Ground-truth label of every step (non-blank line) of `completion`.

  Step k (k = 0, 1, ...) should read "a<op_k>b=r" where <op_k> and b are the
  question's k-th operator and (k+1)-th operand, a is the previous result
  (the first operand for k = 0), and r is a<op_k>b. The line "#### n" should
  follow the last step. Under both rules, a line that is neither a step nor
  a "#### n" line (malformed), a step beyond the last, and every line after
  the first line containing "####" are False.

  Args:
    question: e.g. "48+27-19=".
    completion: any text.
    rule: "prefix": a line is True when it and every line before it are
      right, so errors propagate (a = the true previous result; "#### n"
      needs every step written and n = the gold answer). "local": each line
      is judged on its own (a = the previous step's written result, r must be
      right for the written a and b; "#### n" needs every step written and
      n = the last written result).

  Returns:
    One bool per non-blank line, aligned with `base.line_step_ends`.
  """
  if rule not in STEP_RULES:
    raise ValueError(f"unknown step rule {rule!r}; valid: {STEP_RULES}")
  operands, ops = parse_question(question)
  num_steps = len(ops)
  labels = []
  k, ok, done = 0, True, False
  true_prev = written_prev = operands[0]
  for start, end in base.line_spans(completion):
    line = completion[start:end + 1]
    step = _STEP_RE.fullmatch(line)
    answer = _ANSWER_RE.fullmatch(line)
    if done or (step is None and answer is None):
      label = False
    elif step is not None:
      if k >= num_steps:
        label = False
      else:
        a, op, b, r = (int(step.group(1)), step.group(2), int(step.group(3)),
                       int(step.group(4)))
        true_next = _PY_APPLY[ops[k]](true_prev, operands[k + 1])
        same_op = op == ops[k] and b == operands[k + 1]
        if rule == "prefix":
          label = ok and same_op and a == true_prev and r == true_next
        else:
          label = (same_op and a == written_prev
                   and r == _PY_APPLY[op](a, b))
        k, true_prev, written_prev = k + 1, true_next, r
    else:
      n = int(answer.group(1))
      target = true_prev if rule == "prefix" else written_prev
      label = (ok or rule == "local") and k == num_steps and n == target
    if "####" in line:
      done = True
    ok = ok and label
    labels.append(label)
  return labels


class ArithmeticTask:
  """The embedded arithmetic task behind the common `Task` interface."""

  def __init__(self,
               num_operands: int = 3,
               digits: Union[int, tuple[int, int]] = (1, 2),
               operators: str = "+-",
               allow_negative: bool = True,
               n_train: int = 200_000,
               n_test: int = 1024,
               test_fraction: float = 0.1,
               seed: int = 0,
               step_rule: str = "prefix",
               tokenizer: Optional[Tokenizer] = None):
    """Builds the task; problems are drawn on the first `examples` call.

    Args:
      num_operands: operands per question.
      digits: digits per operand, an int or an inclusive (lo, hi) range.
      operators: a subset of "+-*".
      allow_negative: whether intermediate results may be negative.
      n_train: training problems (repeats allowed).
      n_test: distinct test questions (fewer if the space holds fewer).
      test_fraction: share of the question space reserved for testing.
      seed: chooses the problems drawn, not the split.
      step_rule: "prefix" or "local" (see `step_labels`).
      tokenizer: any `Tokenizer`; default `CharTokenizer()`.
    """
    if isinstance(digits, int):
      digits = (digits, digits)
    self.difficulty = Difficulty(num_operands, tuple(digits), operators,
                                 allow_negative)
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if step_rule not in STEP_RULES:
      raise ValueError(f"unknown step_rule {step_rule!r}; valid: {STEP_RULES}")
    if n_train < 0 or n_test < 0:
      raise ValueError(f"n_train, n_test must be >= 0: {n_train}, {n_test}")
    self.sizes = {"train": n_train, "test": n_test}
    self.test_fraction = test_fraction
    self.seed = seed
    self.step_rule = step_rule
    self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
    self._examples: dict[str, ArithmeticExamples] = {}

  def examples(self, split: str) -> ArithmeticExamples:
    """The split's examples; `.problems` gives them as arrays."""
    base.check_split(split)
    if split not in self._examples:
      draw = (draw_train_problems if split == "train"
              else draw_test_problems)
      self._examples[split] = ArithmeticExamples(
          draw(self.seed, self.sizes[split], self.difficulty,
               self.test_fraction))
    return self._examples[split]

  def prompt(self, example: base.Example) -> str:
    return example.question + "\n"

  def completion(self, example: base.Example) -> str:
    head = example.solution + "\n" if example.solution else ""
    return f"{head}#### {example.answer}"

  def reward(self, example: base.Example, completion: str) -> float:
    """1.0 when the integer after the first "####" is the gold answer."""
    got = final_answer(completion)
    return float(got is not None and got == int(example.answer))

  def step_labels(self, example: base.Example,
                  completion: str) -> list[bool]:
    return step_labels(example.question, completion, self.step_rule)

  def step_ends(self, completion: str) -> list[int]:
    return base.line_step_ends(completion)
