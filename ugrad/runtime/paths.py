"""Run directories, local or on cloud storage, through `etils.epath`.

Workdirs, `init_from` and reward-model directories may be local paths or
URIs such as `gs://bucket/run`; every file the library reads or writes in
them goes through `resolve`, so one code path serves both (Orbax writes
checkpoints to either).
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
