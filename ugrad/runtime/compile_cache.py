"""JAX's persistent compilation cache, on by default for ugrad's launchers.

A run compiles its sampler, log-prob forward and update once; a later run of
the same shapes (the next seed of a sweep, a resumed run, the evaluation CLI)
loads them from disk instead. The cached executable is the one XLA compiled,
so the results are the same bits (checked on the main job's short run).

`UGRAD_COMPILATION_CACHE` names the directory (default
`$XDG_CACHE_HOME/ugrad/jax`, else `~/.cache/ugrad/jax`); `off` turns it off.
A directory JAX already has (`JAX_COMPILATION_CACHE_DIR`) is kept. The size
is capped, which also makes JAX take a file lock around each read and write,
so concurrent runs (parallel sweeps, several local processes) share it
safely.
"""

import os
from typing import Optional

from absl import logging
import jax

ENV = "UGRAD_COMPILATION_CACHE"
OFF = ("off", "0", "none", "")
MAX_BYTES = 4 << 30  # Least recently used entries go past this.


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache"
  )
  return os.path.join(base, "ugrad", "jax")


def enable() -> Optional[str]:
  """Turns the cache on (before anything compiles); returns its directory,
  or None when `UGRAD_COMPILATION_CACHE` is off or names a directory that
  cannot be written (a warning says so)."""
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = os.environ.get(ENV, default_dir())
  if path.strip().lower() in OFF:
    return None
  try:  # Else JAX warns at every compilation.
    os.makedirs(path, exist_ok=True)
    writable = os.access(path, os.W_OK)
  except OSError:
    writable = False
  if not writable:
    logging.warning(
        "compilation cache off: cannot write %s (set %s to a "
        "writable directory, or off)",
        path,
        ENV,
    )
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return path
