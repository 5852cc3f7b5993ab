"""Damage done to a saved checkpoint step, for tests of what restore does."""

import glob
import os

from ugrad.runtime import checksums


def array_files(step_dir) -> list[str]:
  """The files holding the arrays' bytes of one saved step."""
  files = glob.glob(
      os.path.join(step_dir, "state", "**", "d", "*"), recursive=True
  )
  assert files, f"no array files under {step_dir}"
  return files


def flip_one_bit(step_dir):
  """Corruption the storage format cannot see: same length, one bit, in the
  middle of the largest array file."""
  biggest = max(array_files(step_dir), key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))


def ensure_manifest(step_dir):
  """Writes the step's manifest if the save's `finish` had not yet (a
  process killed right after the save): damage done after that is what
  the manifest detects, as for any recorded checkpoint."""
  path = os.path.join(step_dir, checksums.MANIFEST)
  if not os.path.exists(path):
    with open(path, "w") as f:
      f.write(checksums.manifest_text(checksums.file_hashes(step_dir)))
