"""One owner per workdir: a lock file taken for the length of a run.

WORKDIR/ugrad.runtime.lock holds the owner's host, PID and start time as JSON.
It is
created atomically (O_EXCL) on local file systems; a lock left by a process
that no longer exists on this host is taken over with a warning. A lock held
by a live process, or by any process on another host (whose liveness this
host cannot check), refuses the run with `WorkdirInUse`, naming the holder;
one whose holder cannot be checked (another host, or a lock file cut short)
is broken, with a warning, only when asked (`break_lock`, the launchers'
`--break_lock`). In a multi-process run only process 0 takes it.

On cloud storage (`gs://`) there is no exclusive create: the lock is checked
and then written, so two starts within the same second can both pass.
"""

import contextlib
import datetime
import json
import os
import socket

from absl import logging

from ugrad.runtime import distributed
from ugrad.runtime import paths

LOCK_FILE = "ugrad.runtime.lock"


class WorkdirInUse(RuntimeError):
  """Another process holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's live process.
    return True
  return True


def _owner() -> dict:
  return {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "since": datetime.datetime.now().isoformat(timespec="seconds"),
  }


def _read(path) -> dict:
  try:
    owner = json.loads(path.read_text())
    return owner if isinstance(owner, dict) else {}
  except (OSError, ValueError):  # Being written, or cut short: unknown.
    return {}


def _create(path, owner: dict) -> bool:
  """Writes the lock if none exists; whether it did."""
  text = json.dumps(owner)
  if paths.is_uri(path):
    if path.exists():
      return False
    path.write_text(text)
    return True
  try:
    fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return True


def acquire(workdir: paths.PathLike, break_lock: bool = False) -> bool:
  """Takes WORKDIR's lock for this process.

  Args:
    workdir: the run directory.
    break_lock: take over a lock whose holder this host cannot check (on
      another host, or unreadable), which the user says is gone.

  Returns:
    False if this process already held it (a nested run in one process),
    True if it was taken now.

  Raises:
    WorkdirInUse: a live process on this host holds it, or (without
      `break_lock`) one on another host.
  """
  directory = paths.resolve(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / LOCK_FILE
  me = _owner()
  for _ in range(3):
    if _create(path, me):
      return True
    owner = _read(path)
    if owner.get("host") == me["host"] and owner.get("pid") == me["pid"]:
      return False
    checkable = owner.get("host") == me["host"] and isinstance(
        owner.get("pid"), int
    )
    holder = (
        f"PID {owner.get('pid', '?')} on {owner.get('host', '?')} since "
        f"{owner.get('since', '?')}"
    )
    if checkable and _alive(owner["pid"]):
      raise WorkdirInUse(
          f"{directory} is in use by {holder} (lock file {path}), "
          "which still runs"
      )
    if not checkable and not break_lock:
      raise WorkdirInUse(
          f"{directory} is in use by {holder} (lock file {path}); this "
          "host cannot check whether that process still runs: if it is "
          "gone, pass --break_lock"
      )
    logging.warning(
        "%s: taking over the lock of %s, %s",
        directory,
        holder,
        (
            "which no longer runs on this host"
            if checkable
            else "which this host cannot check (--break_lock)"
        ),
    )
    path.unlink(missing_ok=True)
  raise WorkdirInUse(f"{directory}: could not take the lock {path}")


def release(workdir: paths.PathLike):
  """Removes WORKDIR's lock if this process holds it."""
  path = paths.resolve(workdir) / LOCK_FILE
  owner = _read(path)
  if owner.get("pid") == os.getpid() and owner.get("host") == (
      socket.gethostname()
  ):
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(workdir: paths.PathLike, break_lock: bool = False):
  """Holds WORKDIR's lock (process 0 of a multi-process run) meanwhile;
  `break_lock` as in `acquire`."""
  error, taken = None, False
  if distributed.is_main():
    try:
      taken = acquire(workdir, break_lock)
    except WorkdirInUse as e:
      error = e
  if not distributed.agree(error is None):
    raise error or WorkdirInUse(
        f"{workdir} is in use (process 0 could not take its lock)"
    )
  try:
    yield
  finally:
    if taken:
      release(workdir)
