"""What every task offers: examples, prompts, gold completions, rewards.

Data sources and rewards talk to tasks only through the `Task` protocol, so
the embedded arithmetic task and real JSONL data never need special cases.
"""

import bisect
import dataclasses
from typing import Protocol, Sequence

from ugrad import errors
from ugrad.tasks.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem.

  Attributes:
    question: the problem text (without the prompt template).
    solution: the gold reasoning, without the final-answer line.
    answer: the gold final answer, as text.
    source: where the example was read ("path:line"), or "" for generated
      examples; not part of its identity.
  """

  question: str
  solution: str
  answer: str
  source: str = dataclasses.field(default="", compare=False)


class Task(Protocol):
  """The interface of every task (see ugrad/tasks/__init__.py for TASKS)."""

  tokenizer: Tokenizer

  def examples(self, split: str) -> Sequence[Example]:
    """The examples of `split` ("train" or "test")."""

  def prompt(self, example: Example) -> str:
    """The text the policy is conditioned on."""

  def completion(self, example: Example) -> str:
    """The gold completion text (the SFT target)."""

  def reward(self, example: Example, completion: str) -> float:
    """The rule reward of `completion`: 1.0 if its final answer is right."""

  def step_labels(self, example: Example, completion: str) -> list[bool]:
    """Ground-truth correctness of each step of `completion`.

    Raises NotImplementedError for tasks without ground-truth labels.
    """

  def step_ends(self, completion: str) -> list[int]:
    """Character offset of the last character of each step."""


SPLITS = ("train", "validation", "test")


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise errors.UserError(f"unknown split {split!r}; valid splits: {SPLITS}")


def line_spans(text: str) -> list[tuple[int, int]]:
  """The steps of `text`: one per line holding a non-space character.

  Blank lines are not steps. Leading and trailing white space is not part of
  a step, so a step's reward lands on its last visible character, not on the
  newline after it.

  Args:
    text: a completion.

  Returns:
    (start, end) per step, `text[start:end + 1]` being the stripped line.
  """
  spans = []
  offset = 0
  for line in text.split("\n"):
    stripped = line.strip()
    if stripped:
      start = offset + len(line) - len(line.lstrip())
      spans.append((start, start + len(stripped) - 1))
    offset += len(line) + 1
  return spans


def line_step_ends(text: str) -> list[int]:
  """Offset of the last visible character of each non-blank line."""
  return [end for _, end in line_spans(text)]


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
  """BOS followed by the ids of `text`; no BOS added when the tokenizer has
  none or `text` already starts with it (a chat template writes its own)."""
  ids = tokenizer.encode(text)
  if tokenizer.bos_id is None or ids[:1] == [tokenizer.bos_id]:
    return ids
  return [tokenizer.bos_id] + ids


def encode_completion(tokenizer: Tokenizer, text: str) -> list[int]:
  """The ids of `text` followed by EOS."""
  if tokenizer.eos_id is None:
    raise errors.UserError("the tokenizer has no eos_id; completions need one")
  return tokenizer.encode(text) + [tokenizer.eos_id]


def encode_example(task: Task, example: Example) -> tuple[list[int], list[int]]:
  """(prompt ids, gold completion ids) of `example`, ready for SFT."""
  return (
      encode_prompt(task.tokenizer, task.prompt(example)),
      encode_completion(task.tokenizer, task.completion(example)),
  )


def chars_to_tokens(
    tokenizer: Tokenizer, ids: Sequence[int], offsets: Sequence[int]
) -> list[int]:
  """Index of the token of `ids` that produces each character offset.

  Works for any tokenizer whose decoded prefixes only grow, by binary search
  over prefix decodes (O(log T) decodes per offset). Offsets refer to
  `tokenizer.decode(ids)`, which is the text step ends must be computed on.

  Args:
    tokenizer: any `Tokenizer`.
    ids: [T] completion token ids (specials allowed; they produce no text).
    offsets: character offsets into `tokenizer.decode(ids)`.

  Returns:
    One token index in [0, T) per offset.
  """
  ids = [int(i) for i in ids]
  total = len(tokenizer.decode(ids))
  lengths = _PrefixLengths(tokenizer, ids)
  out = []
  for c in offsets:
    if not 0 <= c < total:
      raise errors.UserError(
          f"offset {c} outside the decoded text [0, {total})"
      )
    # The first token whose prefix decode extends past character c.
    out.append(bisect.bisect_right(lengths, c))
  return out


class _PrefixLengths(Sequence[int]):
  """Lazy view: item j = len(decode(ids[:j + 1])), memoised."""

  def __init__(self, tokenizer: Tokenizer, ids: list[int]):
    self._tokenizer = tokenizer
    self._ids = ids
    self._cache: dict[int, int] = {}

  def __len__(self) -> int:
    return len(self._ids)

  def __getitem__(self, j: int) -> int:
    if j not in self._cache:
      self._cache[j] = len(self._tokenizer.decode(self._ids[: j + 1]))
    return self._cache[j]
