"""ugrad/runtime/compile_cache.py: a second run loads its executables from disk
and
gives the same numbers; `off` and a directory JAX already has are kept."""

import os
import subprocess
import sys

import pytest

from tests.helpers import launch_util
from ugrad.runtime import compile_cache


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("UGRAD_COMPILATION_CACHE", None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.update(extra)
  return env


def _enabled_dir(**env) -> list[str]:
  """What `enable()` returns in a fresh process with `env`."""
  code = (
      "from ugrad.runtime import compile_cache; import jax; "
      "print(compile_cache.enable(), jax.config.jax_compilation_cache_dir,"
      " jax.config.jax_compilation_cache_max_size)"
  )
  return subprocess.run(
      [sys.executable, "-c", code],
      cwd=launch_util.ROOT,
      env=_env(**env),
      capture_output=True,
      text=True,
      check=True,
      timeout=120,
  ).stdout.split()


def test_default_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path / "ugrad" / "jax")


def test_off_an_explicit_dir_and_jax_own_setting(tmp_path):
  assert _enabled_dir(UGRAD_COMPILATION_CACHE="off") == ["None", "None", "-1"]
  assert _enabled_dir(UGRAD_COMPILATION_CACHE=str(tmp_path)) == [
      str(tmp_path),
      str(tmp_path),
      str(compile_cache.MAX_BYTES),
  ]
  # A directory that cannot be made: off, not a warning per compilation.
  blocker = tmp_path / "file"
  blocker.write_text("")
  assert _enabled_dir(UGRAD_COMPILATION_CACHE=str(blocker / "cache")) == [
      "None",
      "None",
      "-1",
  ]
  # JAX's own variable wins, and ugrad does not cap its size.
  assert _enabled_dir(
      UGRAD_COMPILATION_CACHE=str(tmp_path / "u"),
      JAX_COMPILATION_CACHE_DIR=str(tmp_path / "j"),
  ) == [str(tmp_path / "j"), str(tmp_path / "j"), "-1"]


# About 30 s: two small runs.
@pytest.mark.slow
def test_a_second_run_hits_the_cache_and_gives_the_same_metrics(tmp_path):
  cache = tmp_path / "cache"
  # Every compile is cached (JAX's default skips those under a second).
  env = _env(
      UGRAD_COMPILATION_CACHE=str(cache),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )

  def run(name):
    argv = launch_util.command(tmp_path / name, steps=4)
    subprocess.run(
        argv,
        cwd=launch_util.ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return launch_util.comparable_metrics(tmp_path / name)

  first = run("first")
  entries = sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))
  assert entries, "the first run cached nothing"
  second = run("second")
  assert second == first
  # Nothing new to compile: every executable came from the cache.
  assert (
      sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))
      == entries
  )
