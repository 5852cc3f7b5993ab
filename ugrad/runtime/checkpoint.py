"""Orbax checkpoints of the train state that resume from the latest good one.

A checkpoint is one step directory holding two Orbax items: `state`, the
trainer's train-state pytree (params, optax state, and what the learner
adds: a critic, a reference that resets), and `meta`, a small JSON dict (the
step, the gradient log's head, the run's config). The state holds arrays
only: every random draw is a function of (seed, step), so no PRNG key is
stored. Python scalars in a state come back as 0-d numpy arrays.

What counts as a bad checkpoint, and what happens to it:

* An unfinished save (a process killed mid-way) is left by Orbax as a
  `<step>.orbax-checkpoint-tmp*` directory that Orbax never lists. `restore`
  moves it to `<directory>/corrupt/` with a warning naming the step.
* A finished step directory that cannot be read back (a truncated or deleted
  array file, garbage JSON in `meta` or in Orbax's `_METADATA`, a missing
  item) is skipped with a warning naming the step, and the next older one is
  tried. Once an older checkpoint restores, the unreadable newer ones are
  moved to `<directory>/corrupt/`, so later saves of the same step numbers
  and Orbax's `max_to_keep` clean-up never meet them. Nothing is deleted.
* If checkpoints exist but none restores, `restore` raises instead of
  reporting "no checkpoint": that usually means a systematic problem (wrong
  devices, a full disk), not corruption, and restarting from scratch over
  the directory would be wrong. Nothing is moved in that case.
* A checkpoint whose stored tree structure or array shapes differ from
  `abstract_state` is a configuration change, not corruption: `restore`
  raises ValueError naming the first differing entry.

Checksums: Orbax does not checksum array data (a flipped bit inside an array
file restores silently), so once a save is on disk `finish` writes
`<step>/ugrad_sha256.json`, the SHA-256 of every file of the step, and
returns the SHA-256 of that manifest for the gradient log. `restore` checks
a step's files against its manifest before reading it: a mismatch makes the
step unreadable (moved aside, the next older one tried). A step saved by a
process killed before `finish` has no manifest; `restore` writes it then,
with a warning. The manifests themselves are `ugrad.runtime.checksums`.

In a multi-process run every process saves and restores together (Orbax
coordinates them); only process 0 moves bad checkpoints aside, and the
others wait for it.
"""

import contextlib
import gc
import hashlib
import json
import sys
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np
import orbax.checkpoint as ocp

from ugrad import errors
from ugrad.runtime import checksums
from ugrad.runtime import distributed
from ugrad.runtime import paths

# Orbax names an unfinished step directory `<step>` + this marker (checked
# against orbax-checkpoint 0.12.8, whose atomic-rename mode is used on local
# file systems).
ORBAX_TMP_MARKER = ".orbax-checkpoint-tmp"
CORRUPT_DIR = "corrupt"
_STATE = "state"
_META = "meta"


class Checkpointer:
  """Saves the train state every `save_every` steps; restores the latest.

  Saves are asynchronous: `save` returns once the arrays are copied to host
  memory (so the caller may donate or overwrite its buffers) and Orbax writes
  them in the background into a temporary directory that is renamed into
  place only when complete. A process killed mid-save therefore never leaves
  a half-written step directory, only a temporary one.
  """

  def __init__(
      self, directory: str, save_every: int, max_to_keep: Optional[int] = 3
  ):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where the step directories live.
      save_every: `should_save(step)` is true every this many steps.
      max_to_keep: how many of the newest checkpoints Orbax keeps; older ones
        are deleted after each save. None keeps all.
    """
    if not isinstance(save_every, int) or save_every < 1:
      raise errors.UserError(
          f"save_every must be a positive int, got {save_every!r}"
      )
    if max_to_keep is not None and max_to_keep < 1:
      raise errors.UserError(
          f"max_to_keep must be >= 1 or None, got {max_to_keep!r}"
      )
    self.directory = paths.resolve(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    # Handlers, not just item names, so that the metadata of checkpoints
    # written by an earlier process can be read before any save or restore.
    handlers = {
        _STATE: ocp.StandardCheckpointHandler(),
        _META: ocp.JsonCheckpointHandler(),
    }
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers=handlers
    )
    self._unhashed: list[int] = []  # Saved by this process, no manifest yet.

  def should_save(self, step: int) -> bool:
    """Whether `step` (the number of updates done) is a checkpoint step."""
    return step > 0 and step % self.save_every == 0

  def all_steps(self) -> list[int]:
    """The steps of the finished checkpoints in the directory, ascending."""
    return sorted(self._manager.all_steps())

  def save(
      self,
      step: int,
      state: Any,
      meta: Mapping[str, Any],
      force: bool = False,
      wait: bool = False,
  ) -> bool:
    """Saves `state` and `meta` as step `step` if it is a checkpoint step.

    Args:
      step: the number of optimizer updates done.
      state: the train-state pytree of arrays (may be sharded).
      meta: a JSON-serialisable dict (data position, config hash, ...).
      force: save even when `should_save(step)` is false (the last step, a
        pre-emption).
      wait: block until the checkpoint is completely written and renamed
        into place; use it for the last save before the process exits.

    Returns:
      Whether a save was started.
    """
    if not (force or self.should_save(step)):
      return False
    _check_meta(meta)
    if step in self._manager.all_steps():
      raise errors.UserError(
          f"a checkpoint for step {step} already exists in {self.directory}"
      )
    args = ocp.args.Composite(
        **{
            _STATE: ocp.args.StandardSave(state),
            _META: ocp.args.JsonSave(dict(meta)),
        }
    )
    # Orbax's own interval logic is bypassed: should_save above decides.
    with self._save_errors():
      saved = self._manager.save(step, args=args, force=True)
      if saved:
        self._unhashed.append(step)
      if wait:
        self._manager.wait_until_finished()
    return saved

  @contextlib.contextmanager
  def _save_errors(self):
    """A failed write (a full disk) names the directory and what is safe.
    Orbax reports a background save's failure at the next call."""
    try:
      yield
    except (OSError, ValueError) as e:  # TensorStore's are ValueErrors.
      failed = paths.os_error(e)
      if failed is None:
        raise
      raise OSError(
          failed.errno,
          f"a checkpoint save in {self.directory} failed writing "
          f"{failed.filename or 'it'} ({failed.strerror or e}); the finished "
          "checkpoints there are intact: free space (or fix the path) and "
          "rerun the same command to resume from the newest",
      ) from e

  def finish(self) -> list[tuple[int, str]]:
    """Waits for the save in flight; process 0 writes the manifest of each
    step saved since the last call while the others wait at one barrier.

    Returns:
      On process 0, (step, SHA-256 of its manifest) for each of those steps
      still on disk, ascending (what the gradient log records); [] on the
      others, which keep no record.
    """
    if not self._unhashed:
      return []
    self.wait_until_finished()
    done, self._unhashed = self._unhashed, []
    present = set(self._manager.all_steps())
    digests = []
    if distributed.is_main():
      digests = [
          (step, checksums.write_manifest(self.directory / str(step)))
          for step in done
          if step in present
      ]
    distributed.sync("checkpoint_manifest")
    return digests

  def manifest_sha256(self, step: int) -> Optional[str]:
    """The SHA-256 of step's manifest as stored, None without one."""
    path = self.directory / str(step) / checksums.MANIFEST
    if not path.exists():
      return None
    return hashlib.sha256(path.read_bytes()).hexdigest()

  def _verify_files(self, step: int):
    """Raises ChecksumError if step's files differ from its manifest (on
    process 0, the verdict shared with all); writes a missing one."""
    problem = None
    if distributed.is_main():
      problem = checksums.check_manifest(self.directory / str(step))
    if not distributed.agree(problem is None):
      raise checksums.ChecksumError(
          problem
          or f"checkpoint step {step} failed its " "checksums on process 0"
      )

  def _ensure_manifest(self, step: int):
    """Writes the manifest of a step that restored without one (process
    0's view of the directory decides, for every process)."""
    if distributed.agree(self.manifest_sha256(step) is None):
      logging.warning(
          "checkpoint step %d in %s has no checksums (its run "
          "stopped before writing them); writing them now",
          step,
          self.directory,
      )
      if distributed.is_main():
        checksums.write_manifest(self.directory / str(step))
      distributed.sync("checkpoint_manifest")

  def wait_until_finished(self):
    """Blocks until the save in flight, if any, is on disk."""
    with self._save_errors():
      self._manager.wait_until_finished()

  def restore(self, abstract_state: Any):
    """Restores the newest checkpoint that reads back completely.

    Args:
      abstract_state: the train state's structure as a pytree of
        jax.ShapeDtypeStruct (e.g. from `jax.eval_shape`); leaves that carry a
        sharding are restored with that sharding, so a sharded state
        restores sharded, possibly on a different mesh than it was saved
        from.

    Returns:
      (step, state, meta), or None when the directory holds no finished
      checkpoint.

    Raises:
      ValueError: the newest readable checkpoint does not match
        `abstract_state` (structure or shapes).
      UnreadableCheckpoints: checkpoints exist but none could be read.
    """
    self._manager.wait_until_finished()
    self._quarantine_unfinished()
    distributed.sync("checkpoint_quarantine")
    with _dropping_abandoned_reads():
      return self._restore_newest(abstract_state)

  def _restore_newest(self, abstract_state: Any):
    """`restore` without the unraisable-hook filter."""
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        self._verify_files(step)
        meta = self._read_meta(step)
        self._check_structure(step, abstract_state)
        state = self._read_state(step, abstract_state)
        self._ensure_manifest(step)
      except _MismatchError as e:
        raise errors.UserError(str(e)) from None
      except Exception as e:  # pylint: disable=broad-exception-caught
        logging.warning(
            "checkpoint step %d in %s is unreadable (%s: %s); "
            "trying an older one",
            step,
            self.directory,
            type(e).__name__,
            _first_line(e),
        )
        # The reason only: the exception's frames would keep Orbax's
        # abandoned reads alive past `_dropping_abandoned_reads`.
        failures.append((step, f"{type(e).__name__}: {_first_line(e)}"))
        continue
      self._quarantine_failed(failures)
      return step, state, meta
    if failures:
      listing = "; ".join(f"step {s}: {why}" for s, why in failures)
      raise UnreadableCheckpoints(
          f"no checkpoint in {self.directory} could be restored ({listing}); "
          "nothing was moved or deleted"
      )
    return None

  def close(self):
    """Waits for the save in flight and releases Orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # Reading one step.

  def _read_meta(self, step: int) -> dict:
    args = ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
    meta = self._manager.restore(step, args=args)[_META]
    if not isinstance(meta, dict):
      raise TypeError(f"meta is a {type(meta).__name__}, not a JSON object")
    return meta

  def _check_structure(self, step: int, abstract_state: Any):
    """Raises _MismatchError if the stored tree differs from the wanted one."""
    stored = self._manager.metadata(step).item_metadata[_STATE]
    if stored is None:
      raise errors.MissingInput(f"step {step} has no readable '{_STATE}' item")
    stored = ocp.tree.to_flat_dict(stored)
    wanted = ocp.tree.to_flat_dict(abstract_state)
    where = f"checkpoint step {step} in {self.directory}"
    for path in sorted(set(wanted) | set(stored)):
      name = "/".join(path)
      if path not in stored:
        raise _MismatchError(
            f"{where} has no entry {name} that the "
            "expected state has (a config change?)"
        )
      if path not in wanted:
        raise _MismatchError(
            f"{where} has an entry {name} that the "
            "expected state lacks (a config change?)"
        )
      got, want = tuple(stored[path].shape), tuple(np.shape(wanted[path]))
      if got != want:
        raise _MismatchError(
            f"{where} stores {name} with shape {got}, "
            f"expected {want} (a config change?)"
        )

  def _read_state(self, step: int, abstract_state: Any) -> Any:
    args = ocp.args.Composite(
        **{_STATE: ocp.args.StandardRestore(abstract_state)}
    )
    return self._manager.restore(step, args=args)[_STATE]

  # Moving bad checkpoints aside.

  def _quarantine_unfinished(self):
    for name in sorted(p.name for p in self.directory.iterdir()):
      step, marker, _ = name.partition(ORBAX_TMP_MARKER)
      if marker and step.isdigit():
        self._move_aside(
            name,
            f"an unfinished save of step {step} "
            "(the process was killed mid-way)",
        )

  def _quarantine_failed(self, failures):
    for step, _ in failures:
      self._move_aside(
          str(step),
          f"checkpoint step {step}, which could not "
          "be read back while an older one could",
      )
    if failures:
      distributed.sync("checkpoint_quarantine_failed")
      self._manager.reload()

  def _move_aside(self, name: str, what: str):
    if not distributed.is_main():
      return
    target_dir = self.directory / CORRUPT_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    suffix = 1
    while target.exists():
      target = target_dir / f"{name}.{suffix}"
      suffix += 1
    (self.directory / name).rename(target)
    logging.warning(
        "%s: moved %s to %s (kept for inspection, not deleted)",
        what,
        self.directory / name,
        target,
    )


class _MismatchError(Exception):
  """The stored state is readable but differs from the expected one."""


class UnreadableCheckpoints(RuntimeError):
  """Checkpoints exist but none restores."""


@contextlib.contextmanager
def _dropping_abandoned_reads():
  """Orbax's concurrent reads of a broken checkpoint leave coroutines that
  raise when they are collected ("Event loop is closed", or their read
  error again when closing them turns GeneratorExit into it), which Python
  prints as tracebacks that look like a crash. Inside this context the
  unraisable hook drops exactly those (anything else still reaches the
  previous hook); on leaving, what is collectable is collected and the
  previous hook is back."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _is_abandoned_read(unraisable) -> bool:
  if isinstance(
      unraisable.exc_value, RuntimeError
  ) and "Event loop is closed" in str(unraisable.exc_value):
    return True
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and "orbax" in code.co_filename


def _check_meta(meta: Mapping[str, Any]):
  if not isinstance(meta, Mapping):
    raise errors.UserError(f"meta must be a dict, got {type(meta).__name__}")
  try:
    json.dumps(dict(meta), allow_nan=False)
  except (TypeError, ValueError) as e:
    raise errors.UserError(f"meta is not JSON-serialisable: {e}") from None


def _first_line(error: Exception) -> str:
  # TensorStore errors append a multi-kilobyte spec after this phrase.
  text = str(error).split(" See full TensorStore details")[0].strip()
  return text.splitlines()[0] if text else ""
