"""Small files written whole or not at all: a write cut short (a full disk,
a kill) never leaves a torn manifest, run config, model or evaluation
record."""

import builtins
import errno
import json
import os

import pytest

from experiments import main
from tests.helpers import train_util
from ugrad.runtime import checksums
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

pytestmark = pytest.mark.slow


def _tearing(monkeypatch, name: str):
  """Every write to a file whose name contains `name` writes half its text,
  then fails as a full disk does."""
  real_open = builtins.open

  class Torn:

    def __init__(self, f):
      self._f = f

    def write(self, text):
      self._f.write(text[: len(text) // 2])
      self._f.flush()
      raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, attr):
      return getattr(self._f, attr)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

  def torn_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if "w" in mode and name in os.path.basename(os.fspath(file)):
      return Torn(f)
    return f

  monkeypatch.setattr(builtins, "open", torn_open)


def test_a_torn_manifest_write_leaves_the_only_checkpoint_resumable(
    tmp_path, monkeypatch
):
  config = train_util.tiny("sft", steps=1)
  with monkeypatch.context() as m:
    _tearing(m, checksums.MANIFEST)
    with pytest.raises(OSError, match="No space"):
      trainer_lib.Trainer(config, str(tmp_path)).train()
  assert trainer_lib.Trainer(config, str(tmp_path)).start_step == 1


@pytest.mark.parametrize(
    "name", [runs.CONFIG_FILE, runs.MODEL_FILE, runs.EVAL_FILE]
)
def test_a_torn_run_record_is_never_left(name, tmp_path, monkeypatch):
  config = train_util.tiny("sft", steps=1)
  with monkeypatch.context() as m:
    _tearing(m, name)
    with pytest.raises(OSError, match="No space"):
      main.run(config, str(tmp_path))
  path = tmp_path / name
  assert not path.exists() or json.loads(path.read_text())
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
