"""Tasks: the embedded arithmetic task and real JSONL data, one interface.

`make_task(name, **kwargs)` builds a task by name from `TASKS`.
"""

from typing import Any

from ugrad import registry
from ugrad.tasks.arithmetic import ArithmeticTask
from ugrad.tasks.base import chars_to_tokens
from ugrad.tasks.base import encode_completion
from ugrad.tasks.base import encode_example
from ugrad.tasks.base import encode_prompt
from ugrad.tasks.base import Example
from ugrad.tasks.base import Task
from ugrad.tasks.jsonl import DataError
from ugrad.tasks.jsonl import gsm8k_task
from ugrad.tasks.jsonl import JsonlTask
from ugrad.tasks.jsonl import math_task
from ugrad.tasks.tokenizer import CharTokenizer
from ugrad.tasks.tokenizer import Tokenizer

TASKS = {"arithmetic": ArithmeticTask, "gsm8k": gsm8k_task, "math": math_task}


def make_task(name: str, **kwargs: Any) -> Task:
  """Builds the task `name` with its keyword arguments.

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  return registry.lookup(TASKS, "task", name)(**kwargs)


__all__ = [
    "ArithmeticTask",
    "CharTokenizer",
    "DataError",
    "Example",
    "JsonlTask",
    "TASKS",
    "Task",
    "Tokenizer",
    "chars_to_tokens",
    "encode_completion",
    "encode_example",
    "encode_prompt",
    "gsm8k_task",
    "make_task",
    "math_task",
]
