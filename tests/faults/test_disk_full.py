"""A full disk during a checkpoint save: a clear error, nothing lost."""

import errno

import orbax.checkpoint as ocp
import pytest

from experiments import main
from tests.helpers import launch_util
from tests.helpers import train_util
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
