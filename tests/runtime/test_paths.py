"""Run directories through etils.epath: local paths and URIs."""

import os

from flax import nnx
import jax
import numpy as np

from ugrad import models
from ugrad.runtime import paths
from ugrad.training import runs


def test_local_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.resolve("run")) == os.path.join(str(tmp_path), "run")
  assert str(paths.resolve("gs://bucket/run") / "checkpoints") == (
      "gs://bucket/run/checkpoints"
  )
  assert paths.is_uri("gs://bucket/run") and not paths.is_uri("run")


def test_a_hugging_face_dir_on_cloud_storage_loads_from_a_local_copy(
    tmp_path, monkeypatch
):
  config = models.preset("tiny", 40)
  model = models.Transformer(config, rngs=nnx.Rngs(0))
  models.save_pretrained(model, tmp_path / "hf")
  copies = []
  real_copy = runs.local_copy

  def copy(path):
    copies.append(path)
    return real_copy(path)

  # The same code a gs:// init_from takes, on a local directory.
  monkeypatch.setattr(paths, "is_uri", lambda p: True)
  monkeypatch.setattr(runs, "local_copy", copy)
  _, params, _ = runs.load_policy(str(tmp_path / "hf"))
  assert copies == [str(tmp_path / "hf")]
  want = jax.tree.leaves(nnx.split(model, nnx.Param)[1])
  for a, b in zip(jax.tree.leaves(params), want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
