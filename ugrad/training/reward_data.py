"""The data of continued reward-model training (DeepSeekMath's iterative RL,
Algorithm 1).

A reward-model run keeps each step's labelled rows in WORKDIR/rm_data
(`record`); a run that continues an earlier one (`rm.init_from`) finds the
chain of runs before it (`run_chain`), loads what they trained on
(`history`) and mixes rows of it, drawn by (seed, step), into every batch so
that they make up `rm.replay` of it (`with_replay`, `replay_rows`). The
learner is `ugrad.training.reward_models.RewardModelLearner`.
"""

import ml_collections
import numpy as np

from ugrad import errors
from ugrad.runtime import paths
from ugrad.training import runs

_REPLAY_SALT = 1_000_033
DATA_DIR = "rm_data"  # one .npz of labelled training rows per step


def run_chain(workdir: str) -> list[ml_collections.ConfigDict]:
  """The configs of a finished reward-model run and of the runs it
  continued (`rm.init_from`), newest first.

  Raises:
    FileNotFoundError: when a run of the chain has not finished.
  """
  chain = []
  while workdir:
    if not runs.is_finished_model(workdir):
      raise errors.MissingInput(
          f"{workdir} holds no finished reward model "
          f"({runs.MODEL_FILE} is missing)"
      )
    chain.append(runs.read_config(workdir))
    workdir = chain[-1].rm.get("init_from", "")
  return chain


def history(workdir: str) -> dict:
  """The labelled rows every run of the chain ending at `workdir` trained
  on (replayed rows excluded): "tokens", "attention_mask" [N, T] int32,
  "targets", "label_mask" [N, T] float32."""
  chain = run_chain(workdir)
  dirs = [workdir] + [c.rm.init_from for c in chain[:-1]]
  parts = []
  for directory in dirs:
    data_dir = paths.resolve(directory) / DATA_DIR
    if not data_dir.is_dir():
      raise errors.MissingInput(
          f"{directory} kept no training data to replay ({DATA_DIR}/ is "
          "missing)"
      )
    for file in sorted(data_dir.iterdir()):
      with file.open("rb") as f, np.load(f) as rows:
        parts.append(dict(rows))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def replay_rows(fresh_rows: int, replay: float) -> int:
  """Historical rows added to `fresh_rows` so they make up `replay` of the
  batch."""
  return int(round(fresh_rows * replay / (1.0 - replay)))


def record(workdir: str, step: int, rows: dict):
  """Keeps the step's fresh labelled rows in `workdir` for later replay."""
  data_dir = paths.resolve(workdir) / DATA_DIR
  data_dir.mkdir(parents=True, exist_ok=True)
  with (data_dir / f"step_{step:07d}.npz").open("wb") as f:
    np.savez_compressed(f, **rows)


def with_replay(config, past: dict, step: int, rows: dict) -> dict:
  """`rows` plus rows of `past` (the `history` of `config.rm.init_from`)
  drawn by (seed, step), so that they make up `config.rm.replay` of the
  batch."""
  n = replay_rows(len(rows["tokens"]), config.rm.replay)
  available, width = past["tokens"].shape
  if width != rows["tokens"].shape[1]:
    raise errors.UserError(
        f"replayed rows of {config.rm.init_from} have {width} "
        f"tokens, this run's have {rows['tokens'].shape[1]}: the task or "
        "sampling.max_new_tokens changed"
    )
  idx = np.random.default_rng([config.seed, step, _REPLAY_SALT]).choice(
      available, size=n, replace=n > available
  )
  return {k: np.concatenate([v, past[k][idx]]) for k, v in rows.items()}
