"""A run on JSONL data whose prompts are in an instruct model's chat format:
the template comes with the Hugging Face policy, and with the run's saved
model to the next run."""

import json
import math

from flax import nnx
import pytest

from tests.helpers import chat_util
from tests.helpers import train_util
from ugrad import models
from ugrad import tasks
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

SYSTEM = "You are a careful assistant."


def _rows(tmp_path):
  rows = [
      {"question": f"What is {a} plus 30?", "answer": f"#### {a + 30}"}
      for a in range(10, 18)
  ]
  for split, part in (("train", rows[:6]), ("test", rows[6:])):
    (tmp_path / f"{split}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in part)
    )


def _config(name, tmp_path, init_from):
  config = train_util.tiny(name, steps=2, init_from=init_from)
  config.task = "gsm8k"
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  config.data.chat_template = True
  config.data.system_prompt = SYSTEM
  return config


@pytest.mark.slow
def test_sft_then_grpo_with_chat_prompts(tmp_path):
  _rows(tmp_path)
  tokenizer = models.HFTokenizer.from_directory(
      chat_util.write_dir(tmp_path / "tok", "qwen")
  )
  model_config = models.preset("tiny", tokenizer.vocab_size, qkv_bias=True)
  policy = models.Transformer(model_config, rngs=nnx.Rngs(0))
  models.save_pretrained(policy, tmp_path / "hf", tokenizer=tokenizer)
  expected = (
      f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
      "<|im_start|>user\nWhat is 10 plus 30?<|im_end|>\n"
      "<|im_start|>assistant\n"
  )

  sft = trainer_lib.Trainer(
      _config("sft", tmp_path, str(tmp_path / "hf")), str(tmp_path / "sft")
  )
  example = sft.task.examples("train")[0]
  assert sft.task.prompt(example) == expected
  assert tasks.encode_prompt(sft.task.tokenizer, expected) == (
      models.encode_chat(
          tokenizer,
          [
              {"role": "system", "content": SYSTEM},
              {"role": "user", "content": "What is 10 plus 30?"},
          ],
          add_generation_prompt=True,
      )
  )
  assert math.isfinite(sft.train()["loss"])
  # The run's saved model keeps the template for runs started from it.
  saved = runs.saved_tokenizer(str(tmp_path / "sft"))
  assert saved.chat_template.render([{"role": "user", "content": "hi"}]) == (
      tokenizer.chat_template.render([{"role": "user", "content": "hi"}])
  )

  grpo = trainer_lib.Trainer(
      _config("grpo", tmp_path, str(tmp_path / "sft")), str(tmp_path / "rl")
  )
  assert grpo.task.prompt(example) == expected
  assert math.isfinite(grpo.train()["loss"])
