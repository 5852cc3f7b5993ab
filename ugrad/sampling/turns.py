"""The host's record of a call's episodes: one open episode per row, its
turns, the environment's answers, rewards and failures
(`ugrad.sampling.episodes` runs the decode loop around it)."""

from absl import logging
import numpy as np

from ugrad import errors


class EpisodeRows:
  """The host's side of a call's episodes: one per row."""

  def __init__(self, spec, episodes, tokenizer, rows, p, width):
    self.spec, self.episodes, self.tokenizer = spec, episodes, tokenizer
    self.turn_start = np.full(rows, p, np.int64)
    self.turns = np.zeros(rows, np.int32)
    self.calls = np.zeros(rows, np.int32)
    self.invalid = np.zeros(rows, np.int32)
    self.truncated = np.zeros(rows, bool)
    self.failed = np.array([e is None for e in episodes])
    self.step_rewards = np.zeros((rows, width), np.float32)
    self.step_mask = np.zeros((rows, width), np.float32)

  def observation_ids(self, observation) -> list:
    if isinstance(observation, str):
      return list(self.tokenizer.encode(observation))
    ids = [int(x) for x in observation]
    if any(not 0 <= x < self.tokenizer.vocab_size for x in ids):
      raise errors.UserError(f"observation ids out of range: {ids}")
    return ids

  def answer(self, r: int, tokens: np.ndarray, col: int):
    """(observation ids, done) for row r whose turn ended at column col-1."""
    ids = tokens[self.turn_start[r] : col].tolist()
    self.turns[r] += 1
    if self.turns[r] >= self.spec.max_turns:
      self.truncated[r] = True
      return [], True
    try:
      turn = self.episodes[r].step(self.tokenizer.decode(ids), ids)
      obs = [] if turn.done else self.observation_ids(turn.observation)
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.warning("environment failed on row %d: %r", r, e)
      self.failed[r] = True
      return [], True
    self.calls[r] += 1
    self.invalid[r] += not getattr(turn, "valid", True)
    self.step_rewards[r, col - 1] = float(turn.reward)
    self.step_mask[r, col - 1] = 1.0
    self.turn_start[r] = col + len(obs)
    return obs, bool(turn.done)


def open_episodes(environment, examples, rows: int, g: int) -> list:
  """One episode per row (None where opening raised, logged)."""
  out = []
  for r in range(rows):
    example = examples[r // g] if examples is not None else None
    try:
      out.append(environment.open(example))
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.warning("environment failed to open row %d: %r", r, e)
      out.append(None)
  return out
