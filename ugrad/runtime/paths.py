"""Run directories, local or on cloud storage, through `etils.epath`.

Workdirs, `init_from` and reward-model directories may be local paths or
URIs such as `gs://bucket/run`; every file the library reads or writes in
them goes through `resolve`, so one code path serves both (Orbax writes
checkpoints to either). Small files (manifests, run records) are written
with `write_atomic`.
"""

import errno
import os
import re
from typing import Optional, Union

from etils import epath

PathLike = Union[str, os.PathLike]

# OSErrors of the machine rather than the code: a full disk or quota, a
# read-only file system, no permission.
ENVIRONMENT_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
)


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


def os_error(e: BaseException) -> Optional[OSError]:
  """`e` as an OSError: itself, or a ValueError of TensorStore (Orbax's
  array writes) whose text carries the message of one of
  `ENVIRONMENT_ERRNOS` ("... \"/path\": [OS error 28: No space left on
  device]"), with the quoted path as its filename; None for anything else."""
  if isinstance(e, OSError):
    return e
  text = str(e)
  for code in ENVIRONMENT_ERRNOS:
    if os.strerror(code) in text:
      path = re.search(r"[\"'](/[^\"']+)[\"']", text)
      return OSError(code, os.strerror(code), path and path.group(1))
  return None
