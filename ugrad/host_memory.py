"""Host memory: keep the buffers XLA frees for its next step.

XLA:CPU allocates each execution's temporaries as one block (127 MB for the
main job's SFT update) with `posix_memalign` from a worker thread. glibc
serves a block that large from a fresh `mmap` in a thread's arena, unmaps
it when freed, and the next step faults every page in again, zeroed by the
kernel: 13 million page faults and a fifth of the main job's time as
system time on the 2-core CPU machine. With one arena, no `mmap` for
allocations and a high trim threshold, the block is reused from the heap
instead (BUILD_NOTES.md has the figures). The price: freed memory stays
with the process (peak RSS about 10% higher there).

Launchers call `keep_freed_memory()` first, before JAX starts its threads
(arenas already made keep their behaviour). It only tunes glibc's
allocator; numerics are untouched. `UGRAD_MALLOC=system` leaves the
allocator as it is.
"""

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
             (_M_TRIM_THRESHOLD, 2**31 - 1))
OPT_OUT = "UGRAD_MALLOC"


def keep_freed_memory() -> bool:
  """Tunes glibc's allocator as above; returns whether it did (False off
  Linux/glibc or with UGRAD_MALLOC=system)."""
  if sys.platform != "linux" or os.environ.get(OPT_OUT) == "system":
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  if not hasattr(libc, "gnu_get_libc_version"):  # Not glibc (e.g. musl).
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
