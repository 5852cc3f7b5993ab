"""Finishing is idempotent: a rerun of a finished (or nearly finished)
workdir (re)writes its policy/, model.json and eval.json from the final
checkpoint, and an extended run replaces them."""

import os

import jax
import numpy as np
import pytest

from experiments import main
from tests.helpers import train_util
from ugrad.runtime import paths
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

pytestmark = pytest.mark.slow


class Killed(BaseException):
  """A kill: nothing after it runs."""


def _killed_at_model_json(monkeypatch, directory: str):
  """The process dies when it starts writing `directory`/model.json (its
  policy/ is then on disk)."""
  real = paths.write_atomic
  target = os.path.join(directory, runs.MODEL_FILE)

  def write_atomic(path, text):
    if os.fspath(path) == target:
      raise Killed()
    real(path, text)

  monkeypatch.setattr(paths, "write_atomic", write_atomic)


def _assert_policy_is_checkpoint(config, workdir: str):
  """WORKDIR/policy holds the parameters of the newest checkpoint."""
  _, saved = runs.load_model(workdir)
  restored = trainer_lib.Trainer(config, workdir)
  assert restored.start_step == config.steps
  for a, b in zip(
      jax.tree.leaves(saved), jax.tree.leaves(restored.state["params"])
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_kill_before_model_json_is_repaired_by_a_rerun(tmp_path, monkeypatch):
  workdir, config = str(tmp_path), train_util.tiny("sft", steps=2)
  with monkeypatch.context() as m:
    _killed_at_model_json(m, workdir)
    with pytest.raises(Killed):
      main.run(config, workdir)
  assert (tmp_path / runs.POLICY_DIR).exists()
  assert not runs.is_finished_model(workdir)
  main.run(config, workdir)
  assert runs.is_finished_model(workdir)
  assert (tmp_path / runs.EVAL_FILE).exists()
  _assert_policy_is_checkpoint(config, workdir)


def test_an_extended_run_rewrites_its_model(tmp_path):
  workdir = str(tmp_path)
  main.run(train_util.tiny("sft", steps=2), workdir)
  _, first = runs.load_model(workdir)
  extended = train_util.tiny("sft", steps=3)
  main.run(extended, workdir)
  _, second = runs.load_model(workdir)
  assert not all(
      np.array_equal(np.asarray(a), np.asarray(b))
      for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))
  )
  _assert_policy_is_checkpoint(extended, workdir)


def test_an_unfinished_warm_start_is_completed_by_the_rerun(
    tmp_path, monkeypatch
):
  workdir, config = str(tmp_path), train_util.tiny("grpo", steps=1)
  sft_dir = os.path.join(workdir, "sft")
  with monkeypatch.context() as m:
    _killed_at_model_json(m, sft_dir)
    with pytest.raises(Killed):
      main.run(config, workdir)
  assert not runs.is_finished_model(sft_dir)
  main.run(train_util.tiny("grpo", steps=1), workdir)
  assert runs.is_finished_model(sft_dir) and runs.is_finished_model(workdir)
  assert (tmp_path / runs.EVAL_FILE).exists()
