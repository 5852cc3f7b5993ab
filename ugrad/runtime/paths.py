"""Run directories, local or on cloud storage, through `etils.epath`.

Workdirs, `init_from` and reward-model directories may be local paths or
URIs such as `gs://bucket/run`; every file the library reads or writes in
them goes through `resolve`, so one code path serves both (Orbax writes
checkpoints to either). Small files (manifests, run records) are written
with `write_atomic`.
"""

import os
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]


def resolve(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`: a local path made absolute (Orbax wants
  absolute paths), a URI (`gs://...`) kept as it is."""
  text = os.fspath(path)
  return epath.Path(text) if is_uri(text) else epath.Path(text).absolute()


def is_uri(path: PathLike) -> bool:
  """Whether `path` names cloud storage (`scheme://...`), not a local file."""
  return "://" in os.fspath(path)


def write_atomic(path: PathLike, text: str):
  """Writes `text` to the file `path` whole or not at all: into a
  temporary file beside it, flushed to disk, then renamed over it, so a
  kill or a full disk mid-write leaves the old file (or none), never a torn
  one. On cloud storage an object's upload is already all or nothing."""
  path = resolve(path)
  if is_uri(path):
    path.write_text(text)
    return
  temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise
