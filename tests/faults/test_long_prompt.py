"""An over-long question stops the run at start-up with one line naming its
file and line (it used to size every batch and run out of memory at step
1)."""

import json

import pytest

from tests.helpers import train_util
from ugrad import errors
from ugrad.training import trainer as trainer_lib


def _config(tmp_path, long_question: str):
  rows = [
      {"question": f"What is {a} plus 2?", "answer": f"{a + 2}\n#### {a + 2}"}
      for a in range(6)
  ]
  rows[3]["question"] = long_question
  for split in ("train", "test"):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  config = train_util.tiny("sft", steps=1)
  config.task = "gsm8k"
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  return config


def test_an_over_long_question_names_its_file_and_line(tmp_path):
  config = _config(tmp_path, "What is 1 plus 2? " * 60_000)  # about 1 MiB
  with pytest.raises(errors.UserError) as e:
    trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert str(e.value).startswith(f"{tmp_path}/train.jsonl:4: the prompt has ")
  assert "more than data.max_prompt_tokens=2048" in str(e.value)
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_limit_is_a_setting(tmp_path):
  config = _config(tmp_path, "What is 1 plus 2? " * 10)
  config.data.max_prompt_tokens = 100
  with pytest.raises(errors.UserError, match=r"train.jsonl:4: .*=100"):
    trainer_lib.Trainer(config, str(tmp_path / "run"))
  config.data.max_prompt_tokens = 0  # no limit
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.context.prompt_len > 100
