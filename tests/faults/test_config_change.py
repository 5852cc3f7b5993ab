"""A rerun under an edited config is refused, naming the changed keys,
unless allowed (then recorded); a setting the run would ignore is refused
at start-up."""

import json

import pytest

from experiments import main
from tests.helpers import train_util
from ugrad import errors
from ugrad.runtime import gradlog
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _log_records(workdir):
  with open(f"{workdir}/{runs.GRADIENT_LOG}") as f:
    return [json.loads(line) for line in f]


def test_an_edited_config_is_refused_unless_allowed(sft_dir, tmp_path):
  workdir = str(tmp_path)
  main.run(train_util.tiny("grpo", steps=2, init_from=sft_dir), workdir)
  records = _log_records(workdir)
  edited = train_util.tiny("dr_grpo", steps=2, init_from=sft_dir)
  edited.optim.lr = 5e-5
  with pytest.raises(errors.UserError) as refused:
    main.run(edited, workdir)
  line = main.error_line(refused.value)
  assert "\n" not in line and "checkpointed at step 2" in line
  assert "method 'grpo' -> 'dr_grpo'" in line
  assert "optim.lr 0.0001 -> 5e-05" in line and "--allow_config_change" in line
  assert runs.read_config(workdir).method == "grpo"  # Nothing rewritten.
  assert _log_records(workdir) == records
  # What changes only logging, evaluation or the step budget resumes.
  relaxed = train_util.tiny("grpo", steps=2, init_from=sft_dir)
  relaxed.eval_questions, relaxed.sample_log_every = 4, 0
  assert trainer_lib.Trainer(relaxed, workdir).config_changes == {}
  # Allowed: the change is recorded in the gradient log and the samples.
  edited.steps = 3
  main.run(edited, workdir, allow_config_change=True)
  notes = [r for r in _log_records(workdir) if "config_change" in r]
  assert len(notes) == 1 and "optim.lr 0.0001 -> 5e-05" in (
      notes[0]["config_change"]
  )
  assert gradlog.main(["verify", workdir]) == 0
  with open(f"{workdir}/samples.jsonl") as f:
    assert any(json.loads(line)["tag"] == "config_change" for line in f)
  assert runs.read_config(workdir).method == "dr_grpo"


def test_a_model_preset_with_init_from_is_refused(sft_dir, tmp_path):
  config = train_util.tiny("grpo", init_from=sft_dir)
  config.model = "qwen2_2.9m"
  with pytest.raises(errors.UserError) as refused:
    main.run(config, str(tmp_path))
  line = main.error_line(refused.value)
  assert "config.model='qwen2_2.9m' is ignored with init_from" in line
  assert "hidden_size" in line
  assert not (tmp_path / "checkpoints").exists()


def test_shortening_a_run_below_its_checkpoint_is_refused(sft_dir, tmp_path):
  config = train_util.tiny("grpo", steps=2, init_from=sft_dir)
  trainer_lib.Trainer(config, str(tmp_path)).train()
  config.steps = 1
  with pytest.raises(errors.UserError, match="checkpointed at step 2, past"):
    main.run(config, str(tmp_path))
  assert runs.read_config(str(tmp_path)).steps == 2
