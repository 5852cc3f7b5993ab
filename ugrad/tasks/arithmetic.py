"""The embedded task: multi-step arithmetic with written-out steps.

    question:  48+27-19=
    solution:  48+27=75
               75-19=56
    answer:    56            (the completion ends with the line "#### 56")

Evaluation is strictly left to right, as the steps are written: "2+3*4=" is
2+3=5, 5*4=20 (no operator precedence). Negative intermediates are written
with a leading minus ("3-45=-42" then "-42+12=-30"). How problems are drawn
and split is in ugrad/tasks/problems.py; problems stay numpy arrays and
become text only when an example is read.
"""

import functools
import re
import zlib
from typing import Optional, Sequence, Union

from ugrad import errors
from ugrad import registry
from ugrad.environments import calculator
from ugrad.tasks import base
from ugrad.tasks.problems import Difficulty
from ugrad.tasks.problems import draw_held_out_problems
from ugrad.tasks.problems import draw_test_problems
from ugrad.tasks.problems import draw_train_problems
from ugrad.tasks.problems import Problems
from ugrad.tasks.tokenizer import CharTokenizer
from ugrad.tasks.tokenizer import DEFAULT_CHARS
from ugrad.tasks.tokenizer import Tokenizer

_PY_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
STEP_RULES = ("prefix", "local")

_QUESTION_RE = re.compile(r"(\d+)((?:[+\-*]\d+)+)=")
_STEP_RE = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)")
_ANSWER_RE = re.compile(r"####\s*(-?\d+)")


def format_question(operands: Sequence[int], ops: str) -> str:
  parts = [str(operands[0])]
  for op, b in zip(ops, operands[1:]):
    parts += [op, str(b)]
  return "".join(parts) + "="


def format_steps(
    operands: Sequence[int],
    ops: str,
    results: Sequence[int],
    tool: bool = False,
) -> str:
  """One line per step, "a*b=r"; with `tool` each step calls the calculator
  instead, "(a*b)=r" ("(a*b)" the policy's, "=r" the tool's answer)."""
  lines, prev = [], operands[0]
  for op, b, r in zip(ops, operands[1:], results):
    expression = f"{prev}{op}{b}"
    if tool:
      expression = calculator.call_text(expression)
    lines.append(f"{expression}={r}")
    prev = r
  return "\n".join(lines)


# The tools variant's characters: the default ones, then the calculator's
# error mark (appended, so every other id is the default tokenizer's).
TOOL_CHARS = DEFAULT_CHARS + calculator.ERROR


class ArithmeticExamples(Sequence[base.Example]):
  """Examples backed by `Problems` arrays; text is built on access."""

  def __init__(self, problems: Problems, tool_share: float = 0.0):
    self.problems = problems
    self.tool_share = tool_share

  def __len__(self) -> int:
    return len(self.problems)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return ArithmeticExamples(self.problems.select(i), self.tool_share)
    p = self.problems
    operands = p.operands[i].tolist()
    ops = p.ops[i].tobytes().decode()
    results = p.results[i].tolist()
    question = format_question(operands, ops)
    return base.Example(
        question=question,
        solution=format_steps(
            operands, ops, results, shows_tool(question, self.tool_share)
        ),
        answer=str(results[-1]),
    )


def shows_tool(question: str, share: float) -> bool:
  """Whether the gold solution of `question` calls the calculator: a fixed
  pseudo-random `share` of the questions (by a hash of the text)."""
  return share > 0 and zlib.crc32(question.encode()) % 10_000 < share * 10_000


@functools.lru_cache(maxsize=65536)
def parse_question(question: str) -> tuple[tuple[int, ...], str]:
  """(operands, operators) of a question such as "48+27-19="."""
  m = _QUESTION_RE.fullmatch(question.strip())
  if m is None:
    raise errors.UserError(f"not an arithmetic question: {question!r}")
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


def step_labels(
    question: str, completion: str, rule: str = "prefix"
) -> list[bool]:
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
  registry.lookup(STEP_RULES, "step rule", rule)
  operands, ops = parse_question(question)
  num_steps = len(ops)
  labels = []
  k, ok, done = 0, True, False
  true_prev = written_prev = operands[0]
  for start, end in base.line_spans(completion):
    line = completion[start : end + 1]
    step = _STEP_RE.fullmatch(line)
    answer = _ANSWER_RE.fullmatch(line)
    if done or (step is None and answer is None):
      label = False
    elif step is not None:
      if k >= num_steps:
        label = False
      else:
        a, op, b, r = (
            int(step.group(1)),
            step.group(2),
            int(step.group(3)),
            int(step.group(4)),
        )
        true_next = _PY_APPLY[ops[k]](true_prev, operands[k + 1])
        same_op = op == ops[k] and b == operands[k + 1]
        if rule == "prefix":
          label = ok and same_op and a == true_prev and r == true_next
        else:
          label = same_op and a == written_prev and r == _PY_APPLY[op](a, b)
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

  def __init__(
      self,
      num_operands: int = 3,
      digits: Union[int, tuple[int, int]] = (1, 2),
      operators: str = "+-",
      allow_negative: bool = True,
      n_train: int = 200_000,
      n_test: int = 1024,
      test_fraction: float = 0.1,
      val_fraction: float = 0.0,
      n_validation: int = 1024,
      seed: int = 0,
      step_rule: str = "prefix",
      tokenizer: Optional[Tokenizer] = None,
      tools: bool = False,
      tool_fraction: float = 0.5,
  ):
    """Builds the task; problems are drawn on the first `examples` call.

    Args:
      num_operands: operands per question.
      digits: digits per operand, an int or an inclusive (lo, hi) range.
      operators: a subset of "+-*".
      allow_negative: whether intermediate results may be negative.
      n_train: training problems (repeats allowed).
      n_test: distinct test questions (fewer if the space holds fewer).
      test_fraction: share of the question space reserved for testing.
      val_fraction: share reserved for the validation split (for choosing
        settings; disjoint from train and test). 0, the default, has no
        validation split and leaves the training draws as they were.
      n_validation: distinct validation questions.
      seed: chooses the problems drawn, not the split.
      step_rule: "prefix" or "local" (see `step_labels`).
      tokenizer: any `Tokenizer`; default `CharTokenizer()`, or with
        `tools` `CharTokenizer(TOOL_CHARS)`.
      tools: the tools variant: gold solutions of `tool_fraction` of the
        questions call the calculator at every step (the SFT warm start's
        data for the `calculator` environment), and the default tokenizer
        can write the calculator's error mark.
      tool_fraction: with `tools`, the share of questions whose solution
        shows the tool.
    """
    if not 0.0 <= tool_fraction <= 1.0:
      raise errors.UserError(
          f"tool_fraction must be in [0, 1], got {tool_fraction}"
      )
    self.tool_share = tool_fraction if tools else 0.0
    if isinstance(digits, int):
      digits = (digits, digits)
    self.difficulty = Difficulty(
        num_operands, tuple(digits), operators, allow_negative
    )
    if not 0.0 < test_fraction < 1.0:
      raise errors.UserError(
          f"test_fraction must be in (0, 1), got {test_fraction}"
      )
    if not 0.0 <= val_fraction < 1.0 - test_fraction:
      raise errors.UserError(
          f"val_fraction must be in [0, 1 - test_fraction), "
          f"got {val_fraction}"
      )
    registry.lookup(STEP_RULES, "step_rule", step_rule)
    if n_train < 0 or n_test < 0:
      raise errors.UserError(
          f"n_train, n_test must be >= 0: {n_train}, {n_test}"
      )
    self.sizes = {"train": n_train, "test": n_test, "validation": n_validation}
    self.test_fraction = test_fraction
    self.val_fraction = val_fraction
    self.seed = seed
    self.step_rule = step_rule
    if tokenizer is None:
      tokenizer = CharTokenizer(TOOL_CHARS if tools else DEFAULT_CHARS)
    self.tokenizer = tokenizer
    self._examples: dict[str, ArithmeticExamples] = {}

  def examples(self, split: str) -> ArithmeticExamples:
    """The split's examples; `.problems` gives them as arrays."""
    base.check_split(split)
    if split not in self._examples:
      tf, vf = self.test_fraction, self.val_fraction
      if split == "train":
        problems = draw_train_problems(
            self.seed, self.sizes[split], self.difficulty, tf + vf
        )
      elif split == "test":
        problems = draw_test_problems(
            self.seed, self.sizes[split], self.difficulty, tf
        )
      elif vf > 0:
        problems = draw_held_out_problems(
            self.seed,
            self.sizes[split],
            self.difficulty,
            (tf, tf + vf),
            stream=2,
            split=split,
        )
      else:
        raise errors.UserError(
            "no validation split: set task_kwargs.val_fraction "
            "(e.g. 0.05) to reserve one"
        )
      self._examples[split] = ArithmeticExamples(problems, self.tool_share)
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

  def step_labels(self, example: base.Example, completion: str) -> list[bool]:
    return step_labels(example.question, completion, self.step_rule)

  def step_ends(self, completion: str) -> list[int]:
    return base.line_step_ends(completion)
