"""Checkpointer: round trips, resume from the latest good checkpoint."""

import gc
import logging
import os
import subprocess
import sys
import textwrap
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from orbax.checkpoint._src.path import atomicity_types
import pytest

from tests.helpers import checkpoint_util
from ugrad.runtime import checkpoint
from ugrad.runtime import checksums


class _Tiny(nnx.Module):

  def __init__(self, rngs):
    # 64 x 64 floats is above Orbax's inline limit, so the kernel gets its
    # own data file that the corruption tests can truncate.
    self.embed = nnx.Embed(16, 64, rngs=rngs)
    self.dense = nnx.Linear(64, 64, rngs=rngs)


def _train_state(seed):
  """A realistic train state after one AdamW update."""
  model = _Tiny(nnx.Rngs(seed))
  _, params = nnx.split(model, nnx.Param)
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return {
      "params": params,
      "opt_state": opt_state,
      "step": jnp.asarray(seed, jnp.int32),
      "key": jax.random.key_data(jax.random.key(seed)),
  }


def _assert_same(got, want):
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == w.dtype
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _abstract(state):
  return jax.eval_shape(lambda: state)


def _saved(directory, steps, max_to_keep=3, manifest=True):
  """A Checkpointer holding one checkpoint per step in `steps`, with
  their checksum manifests unless `manifest` is False."""
  ckpt = checkpoint.Checkpointer(
      directory, save_every=1, max_to_keep=max_to_keep
  )
  for step in steps:
    assert ckpt.save(
        step, _train_state(step), {"step": step, "pos": 10 * step}, wait=True
    )
  if manifest:
    assert [s for s, _ in ckpt.finish()] == [
        s for s in steps if s in ckpt.all_steps()
    ]
  return ckpt


def test_round_trip_into_eval_shape_abstract(tmp_path):
  state = _train_state(7)
  with _saved(tmp_path, []) as ckpt:
    ckpt.save(
        7,
        state,
        {"step": 7, "data_pos": 123, "config": "ab12"},
        force=True,
        wait=True,
    )
  # A new process's view: a fresh Checkpointer on the same directory.
  with checkpoint.Checkpointer(tmp_path, save_every=1) as ckpt:
    step, restored, meta = ckpt.restore(_abstract(state))
  assert step == 7
  assert meta == {"step": 7, "data_pos": 123, "config": "ab12"}
  _assert_same(restored, state)
  key = jax.random.wrap_key_data(restored["key"])
  np.testing.assert_array_equal(jax.random.key_data(key), state["key"])


def test_empty_directory_restores_none(tmp_path):
  with checkpoint.Checkpointer(tmp_path, save_every=5) as ckpt:
    assert ckpt.restore(_abstract(_train_state(0))) is None


def test_save_only_on_checkpoint_steps_unless_forced(tmp_path):
  with checkpoint.Checkpointer(tmp_path, save_every=5) as ckpt:
    state = _train_state(0)
    assert [ckpt.should_save(s) for s in (0, 3, 5, 10)] == [
        False,
        False,
        True,
        True,
    ]
    assert not ckpt.save(3, state, {})
    assert ckpt.save(5, state, {}, wait=True)
    assert ckpt.save(7, state, {}, force=True, wait=True)
    assert ckpt.all_steps() == [5, 7]
    with pytest.raises(ValueError, match="step 5 already exists"):
      ckpt.save(5, state, {}, force=True)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
      ckpt.save(10, state, {"pos": object()})


def test_bad_arguments_are_refused(tmp_path):
  with pytest.raises(ValueError, match="save_every"):
    checkpoint.Checkpointer(tmp_path, save_every=0)
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpoint.Checkpointer(tmp_path, save_every=1, max_to_keep=0)


def test_max_to_keep(tmp_path):
  with _saved(tmp_path, [1, 2, 3, 4, 5], max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [4, 5]
  assert sorted(os.listdir(tmp_path)) == ["4", "5"]


def _make_unfinished(step_dir):
  """What a save killed mid-way leaves: a temporary, incomplete directory."""
  tmp = step_dir + atomicity_types.TMP_DIR_SUFFIX
  os.rename(step_dir, tmp)
  os.remove(os.path.join(tmp, "meta", "metadata"))


def _truncate_array_file(step_dir):
  biggest = max(checkpoint_util.array_files(step_dir), key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _delete_array_files(step_dir):
  for name in checkpoint_util.array_files(step_dir):
    os.remove(name)


def _garbage_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
    f.write('{"step": 2, "pos"')


def _garbage_state_metadata(step_dir):
  with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
    f.write("not json at all")


_flip_one_bit = checkpoint_util.flip_one_bit


# Orbax's concurrent reads of a broken checkpoint leave coroutines that
# complain when collected; restore keeps them quiet, so any that still
# complain fail the test.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "corrupt",
    [
        _make_unfinished,
        _truncate_array_file,
        _delete_array_files,
        _garbage_meta,
        _garbage_state_metadata,
        _flip_one_bit,
    ],
)
@pytest.mark.parametrize("manifest", [True, False])  # Caught by: us, Orbax.
def test_falls_back_to_previous_good_checkpoint(
    tmp_path, caplog, corrupt, manifest
):
  if corrupt is _flip_one_bit and not manifest:
    pytest.skip("Orbax cannot see a flipped bit")
  _saved(tmp_path, [1, 2], manifest=manifest).close()
  corrupt(os.path.join(tmp_path, "2"))
  with caplog.at_level(logging.WARNING):
    with checkpoint.Checkpointer(tmp_path, save_every=1) as ckpt:
      step, state, meta = ckpt.restore(_abstract(_train_state(1)))
      assert (step, meta) == (1, {"step": 1, "pos": 10})
      _assert_same(state, _train_state(1))
      # The bad step is out of the way: a resumed run can save it again.
      assert ckpt.all_steps() == [1]
      assert ckpt.save(2, _train_state(22), {"step": 2}, wait=True)
  warnings = [
      r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
  ]
  assert any("step 2" in w and "moved" in w for w in warnings), warnings
  # Kept for inspection, not deleted.
  moved = os.listdir(os.path.join(tmp_path, checkpoint.CORRUPT_DIR))
  assert len(moved) == 1 and moved[0].startswith("2")
  with checkpoint.Checkpointer(tmp_path, save_every=1) as ckpt:
    step, state, _ = ckpt.restore(_abstract(_train_state(1)))
  assert step == 2
  _assert_same(state, _train_state(22))
  gc.collect()


def test_manifest_hashes_every_file_and_survives_a_restore(tmp_path):
  ckpt = _saved(tmp_path, [1])
  digest = ckpt.manifest_sha256(1)
  listed = checksums.file_hashes(os.path.join(tmp_path, "1"))
  on_disk = {
      os.path.relpath(os.path.join(root, name), tmp_path / "1")
      for root, _, names in os.walk(tmp_path / "1")
      for name in names
  }
  assert set(listed) == on_disk - {checksums.MANIFEST}
  ckpt.restore(_abstract(_train_state(1)))
  ckpt.close()
  assert checksums.check_manifest(os.path.join(tmp_path, "1")) is None
  assert ckpt.manifest_sha256(1) == digest


def test_only_process_0_reads_a_step_to_hash_it(tmp_path, monkeypatch):
  """Another process walking the step directory raced process 0's manifest
  (its temporary file vanished mid-walk: FileNotFoundError, the run
  aborted in the manifest's barrier). Now the others only wait, once per
  finish() whatever the number of steps, and keep no digests."""
  ckpt = checkpoint.Checkpointer(tmp_path, save_every=1, max_to_keep=None)
  for step in (1, 2):
    ckpt.save(step, _train_state(step), {"step": step}, wait=True)
  barriers = []
  monkeypatch.setattr(checkpoint.distributed, "is_main", lambda: False)
  monkeypatch.setattr(checkpoint.distributed, "sync", barriers.append)

  def no_reads(step_dir):
    raise AssertionError(f"process 1 read {step_dir}")

  monkeypatch.setattr(checksums, "file_hashes", no_reads)
  assert not ckpt.finish()
  assert barriers == ["checkpoint_manifest"]
  assert ckpt.manifest_sha256(1) is None  # Process 0 writes it.
  ckpt.close()


def test_a_checkpoint_without_manifest_gets_one_at_restore(tmp_path, caplog):
  ckpt = checkpoint.Checkpointer(tmp_path, save_every=1)
  ckpt.save(1, _train_state(1), {"step": 1}, wait=True)
  ckpt.close()  # No finish(): as if killed before the manifest.
  assert ckpt.manifest_sha256(1) is None
  with caplog.at_level(logging.WARNING):
    with checkpoint.Checkpointer(tmp_path, save_every=1) as again:
      assert again.restore(_abstract(_train_state(1)))[0] == 1
      assert again.manifest_sha256(1) is not None
  assert any("no checksums" in r.getMessage() for r in caplog.records)


def test_garbage_orbax_step_metadata_is_caught_by_checksums_only(tmp_path):
  # Orbax logs and ignores an unreadable _CHECKPOINT_METADATA (the arrays
  # and meta are intact); the manifest still sees the file changed.
  for manifest in (False, True):
    directory = tmp_path / str(manifest)
    ckpt = checkpoint.Checkpointer(directory, save_every=1)
    for step in (1, 2):
      ckpt.save(step, _train_state(step), {"step": step}, wait=True)
    if manifest:
      ckpt.finish()
    ckpt.close()
    with open(os.path.join(directory, "2", "_CHECKPOINT_METADATA"), "w") as f:
      f.write("{{{")
    with checkpoint.Checkpointer(directory, save_every=1) as ckpt:
      step, state, _ = ckpt.restore(_abstract(_train_state(1)))
    assert step == (1 if manifest else 2)
    _assert_same(state, _train_state(step))


def test_no_readable_checkpoint_raises_and_moves_nothing(tmp_path):
  _saved(tmp_path, [1, 2]).close()
  for step in ("1", "2"):
    _garbage_meta(os.path.join(tmp_path, step))
  with checkpoint.Checkpointer(tmp_path, save_every=1) as ckpt:
    with pytest.raises(RuntimeError, match="step 2.*step 1"):
      ckpt.restore(_abstract(_train_state(1)))
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_config_change_is_not_mistaken_for_corruption(tmp_path):
  _saved(tmp_path, [1, 2]).close()
  abstract = _abstract(_train_state(1))
  bigger = dict(abstract, key=jax.ShapeDtypeStruct((4,), jnp.uint32))
  with checkpoint.Checkpointer(tmp_path, save_every=1) as ckpt:
    with pytest.raises(ValueError, match=r"step 2 .*key with shape \(2,\)"):
      ckpt.restore(bigger)
    extra = dict(abstract, critic=jax.ShapeDtypeStruct((3,), jnp.float32))
    with pytest.raises(ValueError, match="no entry critic"):
      ckpt.restore(extra)
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


_SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from ugrad.runtime import checkpoint
    devices = np.array(jax.devices())
    row = jax.make_mesh((8,), ("data",))
    grid = jax.sharding.Mesh(devices.reshape(2, 4), ("data", "model"))
    w = jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32)
    state = {"w": jax.device_put(w, NamedSharding(row, P("data", None))),
             "step": jnp.int32(3)}
    with checkpoint.Checkpointer(sys.argv[1], save_every=1) as ckpt:
      ckpt.save(3, state, {"step": 3}, wait=True)
    want = NamedSharding(grid, P("model", "data"))
    abstract = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32,
                                          sharding=want),
                "step": jax.ShapeDtypeStruct((), jnp.int32)}
    with checkpoint.Checkpointer(sys.argv[1], save_every=1) as ckpt:
      step, got, _ = ckpt.restore(abstract)
    assert step == 3
    assert got["w"].sharding == want, got["w"].sharding
    assert len(got["w"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(w))
    print("SHARDED_OK")
""")


def test_sharded_state_restores_onto_another_mesh(tmp_path):
  root = os.path.dirname(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  env = dict(os.environ, PYTHONPATH=root)
  result = subprocess.run(
      [sys.executable, "-c", _SHARDED, str(tmp_path / "ckpt")],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
      check=False,
  )
  assert "SHARDED_OK" in result.stdout, result.stderr[-3000:]


def test_abandoned_read_filter_passes_other_errors_on(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  orbax_code = types.SimpleNamespace(co_filename="/x/orbax/checkpoint/y.py")
  other_code = types.SimpleNamespace(co_filename="/x/mine.py")
  dropped = [
      types.SimpleNamespace(
          exc_value=RuntimeError("Event loop is closed"), object=None
      ),
      types.SimpleNamespace(
          exc_value=Exception("read error"),
          object=types.SimpleNamespace(cr_code=orbax_code),
      ),
  ]
  kept = [
      types.SimpleNamespace(exc_value=RuntimeError("other"), object=None),
      types.SimpleNamespace(
          exc_value=Exception("read error"),
          object=types.SimpleNamespace(cr_code=other_code),
      ),
  ]
  with checkpoint._dropping_abandoned_reads():  # pylint: disable=protected-access
    for unraisable in dropped + kept:
      sys.unraisablehook(unraisable)
  assert seen == kept
  # Outside the restore, the process's own hook is back.
  assert sys.unraisablehook == seen.append  # pylint: disable=comparison-with-callable
