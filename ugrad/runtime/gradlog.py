"""The gradient log: a tamper-evident record of every optimizer update.

Each line of the log is one record, written as canonical JSON (sorted keys,
no spaces, ASCII):

  {"batch_sha256": ..., "clip_frac": ..., "coef": {"max", "mean", "min",
   "std"}, "extra": {...}, "grad_norm": ..., "kl": ..., "loss": ...,
   "method": "grpo", "prev_sha256": ..., "reward": {...}, "sha256": ...,
   "step": 12}

`sha256` is the SHA-256 of the record's canonical JSON without the `sha256`
key, and `prev_sha256` is the previous record's `sha256` (GENESIS for the
first), so editing, deleting or reordering any record breaks the chain at
that record. Statistics a method does not have (reward, KL, clip fraction)
are null. Numbers follow `ugrad.runtime.metrics.json_scalar` (non-finite values
as
"NaN", "Infinity", "-Infinity").

A checkpoint record follows the update records of the step it saved, once
the save is on disk: {"checkpoint_sha256": SHA-256 of the step's
`ugrad_sha256.json` manifest (the SHA-256 of each of its files),
"checkpoint_step": the trainer step, "prev_sha256", "sha256", "step": the
same update count as the record before}. So the chain also covers the
parameters the updates claim to start from; `verify WORKDIR` checks the
checkpoints still on disk against these records. A run resumed under a
changed config (`--allow_config_change`) records it the same way, after
the record of the checkpoint it resumed from: {"config_change": "optim.lr
0.0001 -> 5e-05", "prev_sha256", "sha256", "step"}.

What the chain cannot show: records cut off the end (the chain before them
is still valid), or a log rewritten from some record on with recomputed
hashes. Both are caught when the last hash is kept elsewhere: the trainer
stores `GradientLog.head` in each checkpoint's metadata and passes it back
as `expected_head` on resume.

Command line: `python -m ugrad.runtime.gradlog verify FILE` prints `OK (N
records)`
and exits 0, or prints the first bad record and exits 1. `verify WORKDIR`
does the same for WORKDIR/gradient_log.jsonl and then checks each
checkpoint in WORKDIR/checkpoints against its manifest and its record.
"""

import dataclasses
import hashlib
import json
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ugrad import errors
from ugrad.runtime import checksums
from ugrad.runtime import metrics
from ugrad.runtime import paths

GENESIS = "0" * 64
# In a workdir (the names `ugrad.training.runs` gives them).
LOG_FILE = "gradient_log.jsonl"
CHECKPOINT_DIR = "checkpoints"


def batch_sha256(tokens: Any) -> str:
  """SHA-256 of a batch of token ids, shape included.

  Args:
    tokens: integer array of any shape, e.g. [B, T]; values must fit int32.

  Returns:
    The hex digest of "int32[<shape>]" followed by the little-endian int32
    bytes in C order, so equal bytes under different shapes differ.
  """
  array = np.asarray(tokens)
  if array.dtype.kind not in "iu":
    raise errors.UserError(f"tokens must be integers, got dtype {array.dtype}")
  info = np.iinfo(np.int32)
  if array.size and (array.min() < info.min or array.max() > info.max):
    raise errors.UserError("token ids do not fit in int32")
  data = np.ascontiguousarray(array, dtype="<i4")
  header = "int32[" + ",".join(str(d) for d in array.shape) + "]"
  return hashlib.sha256(header.encode("ascii") + data.tobytes()).hexdigest()


def record_sha256(record: Mapping[str, Any]) -> str:
  """SHA-256 of a record's canonical JSON, its own `sha256` key left out."""
  body = {k: v for k, v in record.items() if k != "sha256"}
  return hashlib.sha256(_canonical(body).encode("ascii")).hexdigest()


class GradientLog:
  """Appends chained records to a gradient log, resuming an existing one."""

  def __init__(
      self,
      path: str,
      resume_step: Optional[int] = None,
      expected_head: Optional[str] = None,
  ):
    """Opens the log, dropping records written after the resumed checkpoint.

    Args:
      path: the log file (created if missing).
      resume_step: the step of the checkpoint this run resumed from; records
        with a larger step are moved to `path + ".dropped"` and the chain
        continues from the last kept record. None starts a fresh log (any
        existing records are moved aside the same way).
      expected_head: the `head` saved with that checkpoint; if given, the
        last kept record must have this hash.

    Raises:
      ValueError: the kept records do not verify, or do not end at
        `expected_head`.
    """
    self.path = paths.resolve(path)
    kept = metrics.truncate_jsonl(self.path, resume_step)
    result = _verify_lines(kept)
    if not result.ok:
      raise errors.UserError(
          f"{path}: cannot continue a broken chain: {result}"
      )
    self.head = GENESIS
    self.last_step = -1
    self.last_checkpoint = None  # The trainer step of the last record's.
    heads = {GENESIS}
    if kept:
      last = json.loads(kept[-1])
      self.head, self.last_step = last["sha256"], last["step"]
      # A checkpoint's metadata holds the head before its own record, which
      # config changes recorded on resuming from it may follow.
      heads = {self.head}
      for line in reversed(kept):
        record = json.loads(line)
        if not _is_note(record):
          break
        heads.add(record["prev_sha256"])
        if self.last_checkpoint is None:
          self.last_checkpoint = record.get("checkpoint_step")
    if expected_head is not None and expected_head not in heads:
      raise errors.UserError(
          f"{path}: the last kept record (step {self.last_step}) has hash "
          f"{self.head}, but the checkpoint expects {expected_head}"
      )
    self._file = self.path.open("a", encoding="utf-8")  # ASCII records

  def append(
      self,
      step: int,
      method: str,
      tokens: Any,
      *,
      loss: Any,
      grad_norm: Any,
      coef: Mapping[str, Any],
      reward: Optional[Mapping[str, Any]] = None,
      kl: Any = None,
      clip_frac: Any = None,
      extra: Optional[Mapping[str, Any]] = None,
  ) -> dict:
    """Writes the record of one optimizer update.

    Args:
      step: the number of updates done, after this one; must increase.
      method: the coefficient's name, e.g. "grpo".
      tokens: int token ids of the whole update's batch, e.g. [B, T].
      loss: the scalar loss of the update.
      grad_norm: the global gradient norm before clipping.
      coef: coefficient statistics, e.g. `summary(coef, completion_mask)`.
      reward: reward statistics, e.g. `summary(rewards)`; None if none.
      kl: the mean KL to the reference policy; None if not computed.
      clip_frac: the fraction of clipped tokens; None if no clipping.
      extra: any further named scalars.

    Returns:
      The record as written.
    """
    if not isinstance(step, (int, np.integer)) or step <= self.last_step:
      raise errors.UserError(
          f"step must be an int after {self.last_step}, got {step!r}"
      )
    if not isinstance(method, str) or not method:
      raise errors.UserError(f"method must be a non-empty str, got {method!r}")
    record = {
        "step": int(step),
        "method": method,
        "batch_sha256": batch_sha256(tokens),
        "loss": metrics.json_scalar("loss", loss),
        "grad_norm": metrics.json_scalar("grad_norm", grad_norm),
        "coef": _scalars("coef", coef),
        "reward": None if reward is None else _scalars("reward", reward),
        "kl": None if kl is None else metrics.json_scalar("kl", kl),
        "clip_frac": (
            None
            if clip_frac is None
            else metrics.json_scalar("clip_frac", clip_frac)
        ),
        "extra": _scalars("extra", extra or {}),
        "prev_sha256": self.head,
    }
    return self._write(record)

  def append_checkpoint(
      self, checkpoint_step: int, manifest_sha256: str
  ) -> dict:
    """Records a checkpoint on disk: the SHA-256 of its manifest."""
    record = {
        "step": max(self.last_step, 0),
        "checkpoint_step": int(checkpoint_step),
        "checkpoint_sha256": manifest_sha256,
        "prev_sha256": self.head,
    }
    return self._write(record)

  def append_config_change(self, changes: str) -> dict:
    """Records a config change a resumed run was allowed to make
    (`ugrad.training.config_identity.describe_changes`), after the record of the
    checkpoint it resumed from."""
    record = {
        "step": max(self.last_step, 0),
        "config_change": str(changes),
        "prev_sha256": self.head,
    }
    return self._write(record)

  def _write(self, record: dict) -> dict:
    record["sha256"] = record_sha256(record)
    self._file.write(_canonical(record) + "\n")
    # A killed process must not leave the record in Python's buffer only.
    self._file.flush()
    self.head, self.last_step = record["sha256"], record["step"]
    if "config_change" not in record:
      self.last_checkpoint = record.get("checkpoint_step")
    return record

  def close(self):
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


@dataclasses.dataclass(frozen=True)
class VerifyResult:
  """The outcome of `verify`.

  Attributes:
    ok: whether every record chains.
    records: how many records were checked and found good.
    line: 1-based line number of the first bad record, or None.
    step: that record's step, when it could be read, or None.
    reason: why it is bad, or None.
  """

  ok: bool
  records: int
  line: Optional[int] = None
  step: Optional[int] = None
  reason: Optional[str] = None

  def __str__(self):
    if self.ok:
      return f"OK ({self.records} records)"
    step = "" if self.step is None else f" (step {self.step})"
    return f"line {self.line}{step}: {self.reason}"


def verify(path: paths.PathLike) -> VerifyResult:
  """Checks every record's hash and link; names the first that fails."""
  with paths.resolve(path).open(encoding="utf-8") as f:
    return _verify_lines(f.readlines())


def _verify_lines(lines: Sequence[str]) -> VerifyResult:
  prev, prev_step = GENESIS, None
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      return VerifyResult(False, number - 1, number, None, f"bad JSON ({e})")
    step, reason = _check_record(record, line, prev, prev_step)
    if reason:
      return VerifyResult(False, number - 1, number, step, reason)
    prev, prev_step = record["sha256"], step
  return VerifyResult(True, len(lines))


def checkpoint_records(path: paths.PathLike) -> dict[int, str]:
  """{trainer step: manifest SHA-256} of a log's checkpoint records."""
  with paths.resolve(path).open(encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  return {
      r["checkpoint_step"]: r["checkpoint_sha256"]
      for r in records
      if "checkpoint_step" in r
  }


def verify_checkpoints(workdir: paths.PathLike) -> list[str]:
  """Problems of the checkpoints in WORKDIR/checkpoints: files that differ
  from their manifest, a manifest that differs from the log's record, a
  checkpoint the log does not record. Empty when all agree."""
  workdir = paths.resolve(workdir)
  logged = checkpoint_records(workdir / LOG_FILE)
  directory = workdir / CHECKPOINT_DIR
  steps = (
      sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
      if directory.exists()
      else []
  )
  problems = []
  for step in steps:
    step_dir = directory / str(step)
    problem = checksums.check_manifest(step_dir)
    manifest = step_dir / checksums.MANIFEST
    if problem is None and not manifest.exists():
      problem = f"checkpoint step {step} has no {checksums.MANIFEST}"
    if problem is None:
      digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
      if step not in logged:
        problem = f"checkpoint step {step} has no record in the log"
      elif logged[step] != digest:
        problem = (
            f"checkpoint step {step}: its manifest hashes to "
            f"{digest}, the log recorded {logged[step]}"
        )
    if problem:
      problems.append(problem)
  return problems


def _check_record(record, line, prev, prev_step):
  """(step, why the record is bad or None)."""
  if not isinstance(record, dict):
    return None, "not a JSON object"
  step = record.get("step")
  if not isinstance(step, int):
    step = None
  missing = [k for k in ("step", "sha256", "prev_sha256") if k not in record]
  if missing or step is None:
    return step, f"not a gradient-log record (missing {missing or 'step'})"
  if record["sha256"] != record_sha256(record):
    return step, (
        f"hash mismatch: the record hashes to "
        f"{record_sha256(record)}, not its sha256 "
        f"{record['sha256']} (edited)"
    )
  if record["prev_sha256"] != prev:
    return step, (
        f"broken link: prev_sha256 is {record['prev_sha256']}, "
        f"but the record before has sha256 {prev} (a record was "
        "deleted, reordered or inserted)"
    )
  if prev_step is not None and (
      step < prev_step or (step == prev_step and not _is_note(record))
  ):
    return step, f"step {step} does not follow step {prev_step}"
  if not line.endswith("\n"):
    return step, "the line is not newline-terminated (a cut-short write)"
  return step, None


def _is_note(record: Mapping[str, Any]) -> bool:
  """A checkpoint or config-change record (not an update): it keeps the
  step of the record before it."""
  return "checkpoint_sha256" in record or "config_change" in record


def _scalars(name: str, values: Mapping[str, Any]) -> dict:
  if not isinstance(values, Mapping):
    raise errors.UserError(
        f"{name} must be a dict of scalars, got " f"{type(values).__name__}"
    )
  for key in values:
    if not isinstance(key, str):
      raise errors.UserError(f"{name} keys must be str, got {key!r}")
  return {k: metrics.json_scalar(f"{name}/{k}", v) for k, v in values.items()}


def _canonical(obj) -> str:
  return json.dumps(
      obj,
      sort_keys=True,
      separators=(",", ":"),
      ensure_ascii=True,
      allow_nan=False,
  )


def main(argv: Sequence[str]) -> int:
  """`verify FILE|WORKDIR`: prints OK or what is bad; returns the exit
  code."""
  if len(argv) != 2 or argv[0] != "verify":
    print(
        "usage: python -m ugrad.runtime.gradlog verify FILE|WORKDIR",
        file=sys.stderr,
    )
    return 2
  target = paths.resolve(argv[1])
  log = target / LOG_FILE if target.is_dir() else target
  if not log.is_file():
    print(f"{log}: no such file", file=sys.stderr)
    return 2
  result = verify(log)
  if not result.ok:
    print(f"{log}: {result}")
    return 1
  problems = verify_checkpoints(target) if target.is_dir() else []
  for problem in problems:
    print(problem)
  if not problems:
    print(
        result
        if not target.is_dir()
        else f"{result}; checkpoints match their records"
    )
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
