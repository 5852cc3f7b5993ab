"""Runs a contender's own training loop in lockstep with the benchmark.

`experiments.perf.benchmark_grpo` times TRL, Tunix and ugrad each inside its
own, unchanged training loop: `Lockstep` runs that loop in a thread that
waits at a gate where every step begins (a trainer hook, a callback, a data
iterator), and lets the main thread release one step at a time and read its
wall seconds, from the release to the next gate; closing it ends the loop at
its next gate.
"""

import threading
import time
import traceback
from typing import Callable


class _Stop(Exception):
  """Ends a contender's loop once the benchmark has its steps."""


class Lockstep:
  """One contender's own training loop in a thread, one step at a time.

  `start(gate)` builds the contender and runs its loop, which calls `gate()`
  where each step begins. `step()` lets one step run and returns its wall
  seconds, from the release to the next `gate()`.
  """

  def __init__(self, name: str, start: Callable[[Callable[[], None]], None]):
    self.name = name
    self._go = threading.Semaphore(0)
    self._arrived = threading.Semaphore(0)
    self._stop = self._done = False
    self._error = None
    self._thread = threading.Thread(
        target=self._run, args=(start,), name=f"bench-{name}", daemon=True
    )
    self._thread.start()
    self._wait()  # Built, and at the first step's start.

  def gate(self):
    self._arrived.release()
    self._go.acquire()
    if self._stop:
      raise _Stop()

  def _run(self, start):
    try:
      start(self.gate)
    except _Stop:
      pass
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
      traceback.print_exc()
    finally:
      self._done = True
      self._arrived.release()

  def _wait(self):
    self._arrived.acquire()
    if self._error is not None:
      raise RuntimeError(f"{self.name} failed: {self._error!r}")
    if self._done:
      raise RuntimeError(f"{self.name}'s loop ended before the benchmark")

  def step(self) -> float:
    start = time.perf_counter()
    self._go.release()
    self._wait()
    return time.perf_counter() - start

  def close(self):
    if not self._done:
      self._stop = True
      self._go.release()
    self._thread.join()
