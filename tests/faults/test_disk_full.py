"""A full disk during a checkpoint save: a clear error, nothing lost."""

import errno

import orbax.checkpoint as ocp
import pytest

from experiments import main
from tests.helpers import launch_util
from tests.helpers import train_util
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import trainer as trainer_lib

pytestmark = pytest.mark.slow


def test_enospc_in_a_save_stops_clearly_and_the_run_resumes(
    tmp_path, monkeypatch
):
  config = train_util.tiny("sft", steps=5)
  straight = tmp_path / "straight"
  main.run(config, str(straight))
  real_save = ocp.CheckpointManager.save

  def full_disk(manager, step, *args, **kwargs):
    if step == 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(manager, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(OSError) as failure:
    main.run(config, str(tmp_path / "run"))
  line = main.error_line(failure.value)
  assert "No space left on device" in line and "checkpoint" in line
  assert "rerun the same command" in line
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.start_step == 2  # The save before the failure.
  main.run(config, str(tmp_path / "run"))
  assert launch_util.comparable_metrics(
      tmp_path / "run"
  ) == launch_util.comparable_metrics(straight)


def test_a_tensorstore_enospc_names_the_file_and_nothing_masks_it(
    tmp_path, monkeypatch
):
  """Orbax's array writes fail with TensorStore's ValueError, not an
  OSError; the TensorBoard flush that follows in the loop's cleanup fails
  too, and must not replace the save's error."""
  workdir = tmp_path / "run"
  file = f"{workdir}/checkpoints/2.orbax-checkpoint-tmp/state/d/0f1e"
  real_save = ocp.CheckpointManager.save

  def full_disk(manager, step, *args, **kwargs):
    if step == 2:
      raise ValueError(
          f'UNKNOWN: Error writing local file "{file}": [OS error 28: No '
          "space left on device] [source locations='tensorstore/...']"
      )
    return real_save(manager, step, *args, **kwargs)

  def flush_fails(writer):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  monkeypatch.setattr(metrics_lib.MetricsWriter, "close", flush_fails)
  with pytest.raises(OSError) as failure:
    main.run(train_util.tiny("sft", steps=3), str(workdir))
  line = main.error_line(failure.value)
  assert main.is_user_error(failure.value) and "\n" not in line
  assert f"failed writing {file} (No space left on device)" in line
