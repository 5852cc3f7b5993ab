"""The run's records around the update: the step's phase clock and the
gradient log's rows.

`PhaseTimer` times a step's phases back to back (`PHASES`; the metrics that
measure wall time are `TIMING_KEYS`), `log_update` appends one optimizer
update to the tamper-evident gradient log, and `NoRecord` stands in for the
metrics writer and gradient log on a process other than 0. The trainer
(`ugrad.training.trainer`) owns when they are called.
"""

import contextlib
import time

from absl import logging
import numpy as np

# Metrics that measure wall time; they differ between identical runs.
# The phases of a step, timed back to back so that they add up to
# step_time_s: "sample" (the source's draw: sampling, decoding and rewards
# on the host), "prepare" (the rest of the batch: reference and old
# log-probs, values, labels), "update" (the optimizer updates, critic's
# included, waited for), "host" (gradient log, statistics, sample texts).
PHASES = ("sample", "prepare", "update", "host")
TIMING_KEYS = ("tokens_per_s", "step_time_s") + tuple(
    f"time/{phase}_s" for phase in PHASES
)


class PhaseTimer:
  """Wall time per phase: each `lap(phase)` charges the time since the
  previous lap to `phase`."""

  def __init__(self):
    self.restart()

  def restart(self):
    self.totals = dict.fromkeys(PHASES, 0.0)
    self._last = time.perf_counter()

  def lap(self, phase: str):
    now = time.perf_counter()
    self.totals[phase] += now - self._last
    self._last = now

  def metrics(self) -> dict:
    return {f"time/{phase}_s": t for phase, t in self.totals.items()}


def log_update(
    gradient_log, config, index: int, step: int, batch, metrics: dict, tokens
):
  """Appends one optimizer update (number `index`, counted from 1 over the
  run, of train step `step`) to the tamper-evident gradient log."""
  coef = {k[3:]: v for k, v in metrics.items() if k.startswith("gc_")}
  reward = None
  if batch.rollout.rewards is not None:
    rewards = np.asarray(batch.rollout.rewards)
    reward = {
        "mean": float(rewards.mean()),
        "std": float(rewards.std()),
        "min": float(rewards.min()),
        "max": float(rewards.max()),
    }
  skip = {"loss", "grad_norm", "kl", "clip_frac"}
  extra = {
      k: v
      for k, v in metrics.items()
      if k not in skip and not k.startswith("gc_")
  }
  gradient_log.append(
      index,
      config.method if config.trainer == "reward_model" else config.coef.name,
      tokens,
      loss=metrics["loss"],
      grad_norm=metrics["grad_norm"],
      coef=coef,
      reward=reward,
      kl=metrics.get("kl"),
      clip_frac=metrics.get("clip_frac"),
      extra=dict(extra, train_step=step + 1),
  )


class NoRecord:
  """The metrics writer and gradient log of a process other than 0."""

  head = last_checkpoint = None

  def write(self, *unused, **unused_kw):
    pass

  write_text = append = append_checkpoint = append_config_change = write

  def close(self):
    pass


@contextlib.contextmanager
def closing(*closers):
  """Calls `closers` in order after the block. While the block's own error
  propagates, a closer that fails too is logged, not raised: it would
  replace that error (a full disk that stops a save also fails the
  TensorBoard flush after it)."""
  try:
    yield
  except BaseException:
    for close in closers:
      try:
        close()
      except Exception as e:  # pylint: disable=broad-exception-caught
        logging.warning("while stopping after an error: %s", e)
    raise
  for close in closers:
    close()
