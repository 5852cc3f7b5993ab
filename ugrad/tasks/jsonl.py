"""Real data through the common `Task` interface: GSM8K- and MATH-style JSONL.

* GSM8K: rows {"question": ..., "answer": "... #### 72"}; the text before the
  last "####" is the gold solution (calculator annotations such as
  "<<48/2=24>>" removed unless `strip_annotations=False`); a completion's
  answer is the rest of the line after its first "####".
* MATH: rows {"problem": ..., "solution": "... \\boxed{...} ..."}; the gold
  answer and a completion's answer are the contents of their last \\boxed{}.

Answers are compared by math-verify (ugrad/tasks/math_answers.py). Blank
lines are skipped; any other bad row raises `DataError` naming file and line.

With `chat_template=True` a prompt is the question (through
`prompt_template`) as one user turn, after an optional system turn, in the
chat format of the task's Hugging Face tokenizer with the assistant header
opened (ugrad/models/chat_template.py), as instruct models expect.
"""

import dataclasses
import json
import os
import re
from typing import Any, Callable, Optional, Sequence

from ugrad import errors
from ugrad.models import chat_template as chat_template_lib
from ugrad.tasks import base
from ugrad.tasks import math_answers
from ugrad.tasks.tokenizer import CharTokenizer, Tokenizer

_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")


class DataError(errors.UserError):
  """A malformed data file; the message starts with "path:line:"."""


class _RowError(ValueError):
  """A malformed row; `read_jsonl` adds the file and line."""


def _field(row: dict[str, Any], name: str) -> str:
  if name not in row:
    raise _RowError(f"missing field {name!r} (fields: {sorted(row)})")
  if not isinstance(row[name], str):
    raise _RowError(f"field {name!r} is {type(row[name]).__name__}, not str")
  return row[name]


def gsm8k_row(
    row: dict[str, Any], strip_annotations: bool = True
) -> base.Example:
  """An Example from a GSM8K row (question, answer ending in "#### N")."""
  question = _field(row, "question")
  full = _field(row, "answer")
  at = full.rfind("####")
  if at < 0:
    raise _RowError("field 'answer' has no '####' final answer")
  answer = full[at + 4 :].strip()
  if not answer:
    raise _RowError("field 'answer' has nothing after '####'")
  solution = full[:at].rstrip()
  if strip_annotations:
    solution = _ANNOTATION_RE.sub("", solution)
  return base.Example(question=question, solution=solution, answer=answer)


def math_row(row: dict[str, Any]) -> base.Example:
  """An Example from a MATH row (problem, solution with \\boxed{answer})."""
  question = _field(row, "problem")
  solution = _field(row, "solution")
  answer = math_answers.last_boxed(solution)
  if answer is None or not answer.strip():
    raise _RowError("field 'solution' has no complete \\boxed{...} answer")
  return base.Example(question=question, solution=solution, answer=answer)


def read_jsonl(
    path: str, parse_row: Callable[[dict[str, Any]], base.Example]
) -> list[base.Example]:
  """Every row of a JSONL file as an Example.

  Args:
    path: the file.
    parse_row: turns one decoded row into an Example, raising _RowError.

  Returns:
    The examples in file order.

  Raises:
    DataError: "path:line: what is wrong" for bytes that are not UTF-8,
      invalid JSON, a row that is
      not an object, a missing or non-string field, a missing final answer;
      or "path: no rows" for a file without rows.
  """
  examples = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: not UTF-8 text (byte "
            f"0x{raw[e.start]:02x} at column {e.start + 1})"
        ) from None
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
      if not isinstance(row, dict):
        raise DataError(
            f"{path}:{lineno}: row is {type(row).__name__}, not an object"
        )
      try:
        example = parse_row(row)
      except _RowError as e:
        raise DataError(f"{path}:{lineno}: {e}") from None
      examples.append(dataclasses.replace(example, source=f"{path}:{lineno}"))
  if not examples:
    raise DataError(f"{path}: no rows")
  return examples


@dataclasses.dataclass(frozen=True)
class Format:
  """How one data format reads rows, writes gold and reads answers.

  Attributes:
    parse_row: decoded JSON row -> Example (raises _RowError).
    completion: Example -> gold completion text.
    final_answer: completion text -> its final answer text, or None.
    boxed: whether answers are LaTeX from \\boxed{} (see `answers_match`).
  """

  parse_row: Callable[[dict[str, Any]], base.Example]
  completion: Callable[[base.Example], str]
  final_answer: Callable[[str], Optional[str]]
  boxed: bool


def _gsm8k_completion(example: base.Example) -> str:
  head = example.solution + "\n" if example.solution else ""
  return f"{head}#### {example.answer}"


def gsm8k_format(strip_annotations: bool = True) -> Format:
  return Format(
      parse_row=lambda row: gsm8k_row(row, strip_annotations),
      completion=_gsm8k_completion,
      final_answer=math_answers.after_hashes,
      boxed=False,
  )


def math_format() -> Format:
  return Format(
      parse_row=math_row,
      completion=lambda example: example.solution,
      final_answer=math_answers.last_boxed,
      boxed=True,
  )


class JsonlTask:
  """A task read from JSONL files, behind the common `Task` interface.

  Rows are read (and checked) when the task is built, so a bad file fails at
  start-up. Steps are the non-blank lines of a completion; real data has no
  ground-truth step labels.
  """

  def __init__(
      self,
      fmt: Format,
      train_path: Optional[str] = None,
      test_path: Optional[str] = None,
      tokenizer: Optional[Tokenizer] = None,
      prompt_template: Optional[str] = None,
      *,
      validation_path: Optional[str] = None,
      chat_template: bool = False,
      system_prompt: str = "",
  ):
    """Reads the files.

    Args:
      fmt: the data format.
      train_path: JSONL file of the train split, or None.
      test_path: JSONL file of the test split, or None.
      tokenizer: any `Tokenizer`; default a `CharTokenizer` covering every
        character of the prompts and gold completions.
      prompt_template: format string with a {question} field; default
        "{question}\n", or "{question}" (the user turn) with chat_template.
      validation_path: JSONL file of the validation split (for choosing
        settings), or None.
      chat_template: render prompts with the tokenizer's chat template
        (the task's tokenizer must then be a Hugging Face one carrying a
        template by the time prompts are asked for).
      system_prompt: with chat_template, the system turn's text; "" for
        none (the template may still write its default one).
    """
    if train_path is None and test_path is None:
      raise errors.UserError("give train_path, test_path or both")
    if system_prompt and not chat_template:
      raise errors.UserError("system_prompt needs chat_template=True")
    if prompt_template is None:
      prompt_template = "{question}" if chat_template else "{question}\n"
    if "{question}" not in prompt_template:
      raise errors.UserError(
          f"prompt_template {prompt_template!r} has no {{question}} field"
      )
    prompt_template.format(question="")  # Fail now on stray braces.
    self.fmt = fmt
    self.prompt_template = prompt_template
    self.chat_template = chat_template
    self.system_prompt = system_prompt
    self.paths = {
        "train": train_path,
        "test": test_path,
        "validation": validation_path,
    }
    self._examples = {
        split: read_jsonl(os.fspath(path), fmt.parse_row)
        for split, path in self.paths.items()
        if path is not None
    }
    if tokenizer is None:
      tokenizer = CharTokenizer.for_texts(
          text
          for examples in self._examples.values()
          for e in examples
          for text in (self.user_turn(e), self.completion(e))
      )
    elif chat_template:
      chat_template_lib.require_chat_template(tokenizer)
    self.tokenizer = tokenizer

  def examples(self, split: str) -> Sequence[base.Example]:
    base.check_split(split)
    if split not in self._examples:
      raise errors.UserError(
          f"no {split}_path was given, so no {split!r} split"
      )
    return self._examples[split]

  def user_turn(self, example: base.Example) -> str:
    """The question through `prompt_template` (the whole prompt without a
    chat template)."""
    return self.prompt_template.format(question=example.question)

  def prompt(self, example: base.Example) -> str:
    """`user_turn`, or with chat_template the system and user turns in the
    tokenizer's chat format, ending where the assistant's answer starts."""
    if not self.chat_template:
      return self.user_turn(example)
    messages = [{"role": "user", "content": self.user_turn(example)}]
    if self.system_prompt:
      messages.insert(0, {"role": "system", "content": self.system_prompt})
    template = chat_template_lib.require_chat_template(self.tokenizer)
    return template.render(messages, add_generation_prompt=True)

  def completion(self, example: base.Example) -> str:
    return self.fmt.completion(example)

  def reward(self, example: base.Example, completion: str) -> float:
    """1.0 when math-verify finds the completion's answer equal to gold."""
    predicted = self.fmt.final_answer(completion)
    return float(
        math_answers.answers_match(example.answer, predicted, self.fmt.boxed)
    )

  def step_labels(self, example: base.Example, completion: str) -> list[bool]:
    raise NotImplementedError(
        "real-data tasks have no ground-truth step labels; use the "
        "'arithmetic' task or a learned process reward model"
    )

  def step_ends(self, completion: str) -> list[int]:
    return base.line_step_ends(completion)


def gsm8k_task(
    train_path: Optional[str] = None,
    test_path: Optional[str] = None,
    tokenizer: Optional[Tokenizer] = None,
    prompt_template: Optional[str] = None,
    strip_annotations: bool = True,
    validation_path: Optional[str] = None,
    chat_template: bool = False,
    system_prompt: str = "",
) -> JsonlTask:
  """A GSM8K-style task (see the module docstring)."""
  return JsonlTask(
      gsm8k_format(strip_annotations),
      train_path,
      test_path,
      tokenizer,
      prompt_template,
      validation_path=validation_path,
      chat_template=chat_template,
      system_prompt=system_prompt,
  )


def math_task(
    train_path: Optional[str] = None,
    test_path: Optional[str] = None,
    tokenizer: Optional[Tokenizer] = None,
    prompt_template: Optional[str] = None,
    validation_path: Optional[str] = None,
    chat_template: bool = False,
    system_prompt: str = "",
) -> JsonlTask:
  """A MATH-style task (see the module docstring)."""
  return JsonlTask(
      math_format(),
      train_path,
      test_path,
      tokenizer,
      prompt_template,
      validation_path=validation_path,
      chat_template=chat_template,
      system_prompt=system_prompt,
  )
