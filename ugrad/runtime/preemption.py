"""Stopping at a step boundary when the scheduler says so (SIGTERM, SIGINT).

Cloud TPU preempts spot and queued slices with SIGTERM, and SLURM sends it
before a job's time runs out. The trainer asks `Watcher.should_stop(step)`
after every step: once it says yes, the trainer saves a checkpoint of that
step, flushes its logs and raises `Preempted`; the launcher exits with
`EXIT_PREEMPTED`, and the same command resumes exactly.

One process: a SIGTERM or SIGINT handler records the signal (a second
signal of either kind stops at once, as without the handler). Several
processes: JAX's preemption service receives SIGTERM on any process, and
`multihost_utils.reached_preemption_sync_point` names the same step on all
of them, so every process saves that step.
"""

import signal
import threading
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run stopped early, saved, at a scheduler's request."""


class Watcher:
  """Records a stop request while active (a context manager)."""

  _depth = 0  # Watchers active now (a reward model trained in a hook
  # nests one inside the policy run's).

  def __init__(self):
    self.signal: Optional[int] = None
    self._previous = {}
    self._outer = False

  def __enter__(self):
    self._outer = Watcher._depth == 0
    Watcher._depth += 1
    # Handlers can only be set from the main thread; several processes rely
    # on JAX's own SIGTERM notifier, which a Python handler would replace.
    if (
        threading.current_thread() is threading.main_thread()
        and jax.process_count() == 1
    ):
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    if self._outer is not None:
      Watcher._depth -= 1
      self._outer = None
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:  # Asked twice: stop now.
      self.__exit__()
      signal.raise_signal(signum)
      return
    self.signal = signum
    logging.warning(
        "received %s: finishing this step, then saving and "
        "stopping (send it again to stop at once)",
        signal.Signals(signum).name,
    )

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step`; every process must call it
    with the same steps in a multi-process run."""
    if jax.process_count() > 1:
      # The sync point wants one increasing step count: the outer run's.
      return bool(
          self._outer and multihost_utils.reached_preemption_sync_point(step)
      )
    return self.signal is not None

  def reason(self) -> str:
    return (
        signal.Signals(self.signal).name
        if self.signal is not None
        else "a preemption notice"
    )
