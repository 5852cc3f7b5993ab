"""A workdir lock left by another host (a container rescheduled under a new
host name) cannot be checked from here: the launcher refuses it in one line
naming the holder and `--break_lock`, and with that flag takes it over. A
live holder on this host is never broken."""

import json
import os
import socket

import pytest

from experiments import main
from tests.helpers import launch_util
from ugrad.runtime import lock

pytestmark = pytest.mark.slow


def _write_lock(workdir, host, pid):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / lock.LOCK_FILE).write_text(
      json.dumps({"host": host, "pid": pid, "since": "2026-01-01T00:00:00"})
  )


def test_a_lock_from_another_host_is_broken_only_with_the_flag(tmp_path):
  workdir = tmp_path / "run"
  _write_lock(workdir, "pod-7f9c", 4242)
  argv = launch_util.command(workdir, steps=2, checkpoint_every=1)
  refused = launch_util.run(argv)
  assert refused.returncode == main.EXIT_ERROR
  assert "Traceback" not in refused.stderr
  assert refused.stderr.strip().splitlines()[-1] == (
      f"error: {workdir} is in use by PID 4242 on pod-7f9c since "
      f"2026-01-01T00:00:00 (lock file {workdir / lock.LOCK_FILE}); this "
      "host cannot check whether that process still runs: if it is gone, "
      "pass --break_lock  (--traceback shows where)"
  )
  assert not (workdir / "checkpoints").exists()
  broken = launch_util.run(argv + ["--break_lock"])
  assert broken.returncode == 0, broken.stderr
  assert "taking over the lock of PID 4242 on pod-7f9c" in broken.stderr
  assert (workdir / "eval.json").exists()
  assert not (workdir / lock.LOCK_FILE).exists()  # Released at the end.


def test_a_cut_short_lock_file_is_broken_only_with_the_flag(tmp_path):
  (tmp_path / lock.LOCK_FILE).write_text('{"host": "pod-7')
  with pytest.raises(lock.WorkdirInUse, match="pass --break_lock"):
    lock.acquire(tmp_path)
  assert lock.acquire(tmp_path, break_lock=True)
  lock.release(tmp_path)


def test_the_flag_never_breaks_a_live_holder_on_this_host(tmp_path):
  _write_lock(tmp_path, socket.gethostname(), os.getppid())
  with pytest.raises(
      lock.WorkdirInUse, match=f"PID {os.getppid()} .* which still runs"
  ):
    lock.acquire(tmp_path, break_lock=True)
