"""One owner per workdir."""

import json
import os
import socket
import subprocess
import sys

import pytest

from ugrad.runtime import lock


def _write_lock(workdir, pid, host=None):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
    json.dump(
        {
            "host": host or socket.gethostname(),
            "pid": pid,
            "since": "2026-01-01T00:00:00",
        },
        f,
    )


def test_a_held_workdir_is_refused_with_its_owner(tmp_path):
  _write_lock(tmp_path, os.getppid())  # A live process on this host.
  with pytest.raises(
      lock.WorkdirInUse,
      match=rf"in use by PID {os.getppid()} on "
      rf"{socket.gethostname()} since 2026-01-01T00:00:00",
  ):
    lock.acquire(tmp_path)


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
  _write_lock(tmp_path, 1, host="some-other-host")
  with pytest.raises(lock.WorkdirInUse, match="on some-other-host"):
    lock.acquire(tmp_path)


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _write_lock(tmp_path, dead.pid)
  assert lock.acquire(tmp_path)
  with open(tmp_path / lock.LOCK_FILE) as f:
    assert json.load(f)["pid"] == os.getpid()
  lock.release(tmp_path)
  assert not (tmp_path / lock.LOCK_FILE).exists()


def test_hold_releases_on_exit_and_is_reentrant(tmp_path):
  with lock.hold(tmp_path):
    assert (tmp_path / lock.LOCK_FILE).exists()
    with lock.hold(tmp_path):  # The same process again: no conflict.
      pass
    assert (tmp_path / lock.LOCK_FILE).exists()
  assert not (tmp_path / lock.LOCK_FILE).exists()
  with pytest.raises(RuntimeError):
    with lock.hold(tmp_path):
      raise RuntimeError("a failing run still releases")
  assert not (tmp_path / lock.LOCK_FILE).exists()
