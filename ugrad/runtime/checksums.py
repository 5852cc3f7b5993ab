"""SHA-256 manifests of checkpoint step directories.

Orbax does not checksum array data, so each finished step directory gets a
manifest, `ugrad_sha256.json`, listing the SHA-256 of every other file in
it. This module hashes a step's files, renders the manifest's text (whose own
SHA-256 the gradient log records) and checks a step's files against its
manifest; `ugrad.runtime.checkpoint` writes and enforces the manifests, and
`ugrad.runtime.gradlog` verifies them without importing Orbax.
"""

import hashlib
import json
from typing import Mapping, Optional

from ugrad.runtime import paths

MANIFEST = "ugrad_sha256.json"


class ChecksumError(Exception):
  """A checkpoint file's bytes differ from its manifest."""


def file_hashes(step_dir) -> dict[str, str]:
  """SHA-256 of every file under a step directory (the manifest left
  out), keyed by path relative to it."""
  step_dir = paths.resolve(step_dir)
  hashes = {}
  for root, _, files in step_dir.walk():
    for name in files:
      path = root / name
      relative = str(path.relative_to(step_dir))
      if relative != MANIFEST:
        hashes[relative] = _sha256_of(path)
  return dict(sorted(hashes.items()))


def check_manifest(step_dir) -> Optional[str]:
  """Why a step's files differ from its manifest, or None if they match
  (or it has none)."""
  step_dir = paths.resolve(step_dir)
  path = step_dir / MANIFEST
  if not path.exists():
    return None
  try:
    want = json.loads(path.read_text())
  except ValueError as e:
    return f"{path} is not valid JSON ({e})"
  got = file_hashes(step_dir)
  for name in sorted(set(want) | set(got)):
    if name not in got:
      return f"{step_dir}/{name} is missing (listed in {MANIFEST})"
    if name not in want:
      return f"{step_dir}/{name} is not listed in {MANIFEST}"
    if got[name] != want[name]:
      return (
          f"{step_dir}/{name} has SHA-256 {got[name]}, but {MANIFEST} "
          f"says {want[name]} (the file changed after the save)"
      )
  return None


def manifest_text(hashes: Mapping[str, str]) -> str:
  """The manifest file's text for `hashes` (what its SHA-256 is taken of)."""
  return json.dumps(hashes, sort_keys=True, indent=0) + "\n"


def write_manifest(step_dir) -> str:
  """Hashes the files of a finished step directory into its manifest
  (written atomically); returns the manifest's SHA-256. One process only:
  another one walking the directory meanwhile would meet the manifest's
  temporary file."""
  step_dir = paths.resolve(step_dir)
  text = manifest_text(file_hashes(step_dir))
  paths.write_atomic(step_dir / MANIFEST, text)
  return hashlib.sha256(text.encode("ascii")).hexdigest()


def _sha256_of(path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
