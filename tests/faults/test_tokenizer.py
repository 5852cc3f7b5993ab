"""Tokenizer identity: a run stores the tokenizer it trained with, and a
policy whose tokenizer does not fit its embedding or its task is refused at
start-up with the numbers, before any step."""

import json

from flax import nnx
import pytest

from tests.helpers import bpe_util
from tests.helpers import train_util
from ugrad import errors
from ugrad import models
from ugrad.tasks import tokenizer as tokenizer_lib
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft", steps=1), workdir).train()
  return workdir


def _jsonl_config(tmp_path, init_from: str):
  """Tiny GRPO on a JSONL task whose text has letters (36 ids)."""
  rows = [
      {"question": f"What is {a} plus {b}?", "answer": f"{a + b}\n#### {a + b}"}
      for a in range(3, 9)
      for b in range(2, 5)
  ]
  for split, part in (("train", rows[:12]), ("test", rows[12:])):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in part)
  config = train_util.tiny("grpo", steps=1, init_from=init_from)
  config.task = "gsm8k"
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  return config


def _hf_dir(path, rows: int, with_tokenizer: bool = True):
  """A Hugging Face directory: an embedding of `rows`, a BPE tokenizer
  (about 300 ids) unless not `with_tokenizer`."""
  bpe = bpe_util.train_bpe([f"What is {a} plus 2?" for a in range(9)])
  tokenizer = models.HFTokenizer(bpe, pad_id=0, bos_id=1, eos_id=2)
  model_config = models.preset("tiny", rows, qkv_bias=True)
  policy = models.Transformer(model_config, rngs=nnx.Rngs(0))
  models.save_pretrained(
      policy, path, tokenizer=tokenizer if with_tokenizer else None
  )
  return tokenizer


def test_a_run_stores_its_character_tokenizer(sft_dir):
  saved = runs.saved_tokenizer(sft_dir)
  assert saved.chars == tokenizer_lib.DEFAULT_CHARS and saved.vocab_size == 26


def test_a_run_stores_its_hugging_face_tokenizer(tmp_path):
  tokenizer = _hf_dir(tmp_path / "hf", 320)
  graphdef, params, loaded = runs.load_policy(str(tmp_path / "hf"))
  runs.save_model(
      str(tmp_path / "run"),
      params,
      nnx.merge(graphdef, params).config,
      tokenizer=loaded,
  )
  _, _, saved = runs.load_policy(str(tmp_path / "run"))
  text = "What is 7 plus 2?"
  assert saved.vocab_size == tokenizer.vocab_size
  assert saved.encode(text) == tokenizer.encode(text)
  assert (saved.bos_id, saved.eos_id, saved.pad_id) == (1, 2, 0)


def test_a_character_policy_on_a_task_with_other_characters(sft_dir, tmp_path):
  with pytest.raises(errors.UserError, match="26 ids; the task's has 36"):
    trainer_lib.Trainer(_jsonl_config(tmp_path, sft_dir), str(tmp_path / "w"))
  assert not (tmp_path / "w" / "metrics.jsonl").exists()


def test_a_policy_with_another_character_order_keeps_its_ids(sft_dir, tmp_path):
  """A same-size character set in another order: the policy's ids are
  used, not the task's (which would remap every id silently)."""
  model_file = f"{sft_dir}/{runs.MODEL_FILE}"
  with open(model_file) as f:
    saved = json.load(f)
  chars = saved["tokenizer"]["chars"]
  saved["tokenizer"]["chars"] = chars[::-1]
  with open(model_file, "w") as f:
    json.dump(saved, f)
  try:
    trainer = trainer_lib.Trainer(
        train_util.tiny("grpo", steps=1, init_from=sft_dir), str(tmp_path)
    )
  finally:
    saved["tokenizer"]["chars"] = chars
    with open(model_file, "w") as f:
      json.dump(saved, f)
  assert trainer.task.tokenizer.chars == chars[::-1]
  assert trainer.task.tokenizer.encode("0") == [3 + len(chars) - 1]


def test_a_hugging_face_tokenizer_larger_than_the_embedding(tmp_path):
  tokenizer = _hf_dir(tmp_path / "hf", 200)
  with pytest.raises(
      errors.UserError,
      match=f"tokenizer has {tokenizer.vocab_size} ids but the model's "
      "embedding has 200 rows",
  ):
    trainer_lib.Trainer(
        _jsonl_config(tmp_path, str(tmp_path / "hf")), str(tmp_path / "w")
    )


def test_a_hugging_face_dir_without_its_tokenizer(tmp_path):
  _hf_dir(tmp_path / "hf", 320, with_tokenizer=False)
  with pytest.raises(errors.MissingInput, match="has no tokenizer.json"):
    trainer_lib.Trainer(
        _jsonl_config(tmp_path, str(tmp_path / "hf")), str(tmp_path / "w")
    )
