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
allocator as it is, `UGRAD_MALLOC=keep` tunes it everywhere.

Only where JAX will compute on the CPU: on a GPU or TPU host the
temporaries live on the device, and one arena serialises the many host
threads of compilation and transfers (suspected in the 22 minutes of
system time of the main job on a 16-core H200 machine; BUILD_NOTES.md).
"""

import ctypes
import glob
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = (
    (_M_ARENA_MAX, 1),
    (_M_MMAP_MAX, 0),
    (_M_TRIM_THRESHOLD, 2**31 - 1),
)
OPT_OUT = "UGRAD_MALLOC"


# Device files of an NVIDIA GPU, a TPU (v4: accel; v5e and later: vfio).
_ACCELERATOR_FILES = ("/dev/nvidiactl", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*")


def computes_on_cpu() -> bool:
  """Whether JAX will compute on the CPU here, decided before it starts:
  by JAX_PLATFORMS's first entry where set, else by the absence of an
  accelerator's device files."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(glob.glob(pattern) for pattern in _ACCELERATOR_FILES)


def keep_freed_memory() -> bool:
  """Tunes glibc's allocator as above; returns whether it did (False off
  Linux/glibc, on an accelerator host, or with UGRAD_MALLOC=system)."""
  choice = os.environ.get(OPT_OUT)
  if sys.platform != "linux" or choice == "system":
    return False
  if choice != "keep" and not computes_on_cpu():
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  if not hasattr(libc, "gnu_get_libc_version"):  # Not glibc (e.g. musl).
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
