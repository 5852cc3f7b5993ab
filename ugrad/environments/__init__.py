"""Environments: what answers the policy between the turns of an episode.

An environment turns one sampled completion into a multi-turn episode. For
each question it opens an `Episode`; the policy writes a turn, which ends
at one of the environment's `stop_strings` (e.g. a closing tool tag) or at
EOS; the episode answers the turn with a `Turn`: an observation (text, or
token ids passed through untouched) that is appended to the sequence as
input the policy is not trained on, an optional reward for that turn, and
whether the episode is over. A turn that ends at EOS ends the episode.

* `calculator`: the embedded task's arithmetic tool (`calculator.py`): the
  policy writes "(48*27)" and reads "=1296".

`ENVIRONMENTS` maps a name (`config.environment`) to a factory
`(task, **kwargs) -> Environment`; code outside the package adds one with
`ugrad.register_environment`. The multi-turn sampler that runs episodes is
`ugrad.sampling.episodes`.
"""

import dataclasses
from typing import Callable, Protocol, Sequence, Union

from ugrad import registry
from ugrad.environments import calculator


@dataclasses.dataclass(frozen=True)
class Turn:
  """An environment's answer to one policy turn.

  Attributes:
    observation: text (encoded with the policy's tokenizer, no BOS/EOS) or
      token ids (used as they are), appended after the turn with completion
      mask 0; ignored when `done`.
    reward: the turn's reward, placed as a step reward at the turn's last
      policy token.
    done: the episode is over (no observation is appended).
    valid: whether the turn's tool call was well formed (for the logs).
  """

  observation: Union[str, Sequence[int]] = ""
  reward: float = 0.0
  done: bool = False
  valid: bool = True


class Episode(Protocol):
  """One question's episode."""

  def step(self, text: str, ids: Sequence[int]) -> Turn:
    """The answer to a policy turn: its decoded `text` and sampled `ids`
    (the stop string included)."""


class Environment(Protocol):
  """Opens episodes; declares where a policy turn ends.

  Attributes:
    stop_strings: texts that end a policy turn (matched on the token ids the
      policy's tokenizer gives each of them).
  """

  stop_strings: Sequence[str]

  def open(self, example) -> Episode:
    """The episode of one question (a `ugrad.tasks.Example`)."""


class CalculatorEnvironment:
  """The calculator tool: each turn that ends with a call "(EXPR)" is
  answered "=VALUE" (or "=?" for a malformed call); no turn reward."""

  stop_strings = (calculator.CALL_CLOSE,)

  def __init__(self, task=None, **unused):
    del task, unused

  def open(self, example) -> "CalculatorEnvironment":
    del example
    return self

  def step(self, text: str, ids: Sequence[int]) -> Turn:
    del ids
    observation = calculator.answer_call(text)
    return Turn(observation, valid=not observation.endswith(calculator.ERROR))


# name -> (task, **kwargs) -> Environment.
ENVIRONMENTS: dict[str, Callable] = {"calculator": CalculatorEnvironment}


def get(name: str) -> Callable:
  """The environment factory called `name` (the error lists the valid
  ones)."""
  return registry.lookup(ENVIRONMENTS, "environment", name)


def make(name: str, task, **kwargs) -> Environment:
  """The environment `name` for `task`."""
  return get(name)(task, **kwargs)


def register(name: str, factory: Callable, *, replace: bool = False):
  """Adds an environment factory; see `ugrad.register_environment`."""
  if not callable(factory):
    raise TypeError(
        f"environment {name!r}: expected a factory (task, **kwargs) -> "
        f"Environment, got {type(factory).__name__}"
    )
  return registry.register(
      ENVIRONMENTS, "environment", name, factory, replace=replace
  )
