"""A JSONL task's prompts in a Hugging Face tokenizer's chat format, token
for token against transformers' apply_chat_template."""

import json

import ml_collections
import pytest
import transformers

from experiments.configs import base as base_config
from tests.helpers import chat_util
from ugrad import errors
from ugrad import models
from ugrad import tasks
from ugrad.training import build
from ugrad.training import validate

ROWS = [
    {"question": "What is 12 plus 30?", "answer": "12 + 30 = 42\n#### 42"},
    {
        "question": "Natalia sold 48 clips in April and half as many in May.",
        "answer": "48/2 = 24\n48 + 24 = 72\n#### 72",
    },
]
SYSTEM = "You are a careful assistant. Think step by step."


def _data(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  return str(path)


def _reference(path, messages):
  hf = transformers.AutoTokenizer.from_pretrained(str(path))
  return list(
      hf.apply_chat_template(
          messages, add_generation_prompt=True, tokenize=True, return_dict=False
      )
  )


@pytest.mark.parametrize("style", ["qwen", "llama3"])
@pytest.mark.parametrize("system", ["", SYSTEM])
def test_prompts_match_apply_chat_template(tmp_path, style, system):
  path = chat_util.write_dir(tmp_path / "tok", style)
  tokenizer = models.HFTokenizer.from_directory(path)
  task = tasks.gsm8k_task(
      _data(tmp_path),
      tokenizer=tokenizer,
      chat_template=True,
      system_prompt=system,
  )
  for row, example in zip(ROWS, task.examples("train")):
    messages = [{"role": "user", "content": row["question"]}]
    if system:
      messages.insert(0, {"role": "system", "content": system})
    # What the sampler and SFT feed the model: no second BOS for Llama-3,
    # whose template writes its own.
    prompt_ids, completion_ids = tasks.encode_example(task, example)
    assert prompt_ids == _reference(path, messages)
    assert completion_ids[-1] == tokenizer.eos_id


def test_a_prompt_template_fills_the_user_turn(tmp_path):
  path = chat_util.write_dir(tmp_path / "tok", "qwen")
  task = tasks.gsm8k_task(
      _data(tmp_path),
      tokenizer=models.HFTokenizer.from_directory(path),
      prompt_template="Solve: {question}",
      chat_template=True,
  )
  assert task.prompt(task.examples("train")[0]).endswith(
      "<|im_start|>user\nSolve: What is 12 plus 30?<|im_end|>\n"
      "<|im_start|>assistant\n"
  )


def test_without_a_template_the_error_is_one_line(tmp_path):
  path = chat_util.write_dir(tmp_path / "tok", "llama3")
  config = json.loads((path / "tokenizer_config.json").read_text())
  del config["chat_template"]
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(errors.UserError, match="no chat template") as e:
    tasks.gsm8k_task(
        _data(tmp_path),
        tokenizer=models.HFTokenizer.from_directory(path),
        chat_template=True,
    )
  assert "\n" not in str(e.value)
  # The default character tokenizer has no template: the first prompt says.
  task = tasks.gsm8k_task(_data(tmp_path), chat_template=True)
  with pytest.raises(errors.UserError, match="need a Hugging Face tokenizer"):
    task.prompt(task.examples("train")[0])
  with pytest.raises(errors.UserError, match="needs chat_template=True"):
    tasks.gsm8k_task(_data(tmp_path), system_prompt=SYSTEM)


def test_config_fields_reach_the_task(tmp_path):
  path = chat_util.write_dir(tmp_path / "tok", "qwen")
  config = base_config.get_config()
  config.task = "gsm8k"
  config.data.train_path = _data(tmp_path)
  config.data.chat_template = True
  config.data.system_prompt = SYSTEM
  task = build.with_tokenizer(
      build.make_task(config), models.HFTokenizer.from_directory(path)
  )
  prompt = task.prompt(task.examples("train")[0])
  assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")
  # A run saved before these fields existed builds its task as before.
  old = ml_collections.ConfigDict(config.to_dict())
  del old.data["chat_template"]
  del old.data["system_prompt"]
  assert not build.make_task(old).chat_template


def test_the_embedded_task_refuses_chat_settings():
  config = base_config.get_config()
  config.init_from = "somewhere"
  config.data.chat_template = True
  with pytest.raises(errors.UserError, match="apply to JSONL tasks"):
    validate.check_config(config)
