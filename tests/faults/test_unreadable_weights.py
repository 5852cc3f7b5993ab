"""A truncated or corrupt safetensors file in a Hugging Face `init_from`
directory stops the run at start-up with one line naming the file (it
used to be safetensors' 34-line traceback naming none)."""

import json

from flax import nnx
import pytest

from experiments import main
from experiments.configs import base
from tests.helpers import bpe_util
from tests.helpers import train_util
from ugrad import errors
from ugrad import models
from ugrad.models import hf_config

pytestmark = pytest.mark.slow


def _hf_dir(path, sharded: bool):
  """A tiny Hugging Face directory; with `sharded`, its weights named by a
  shard index (read lazily, tensor by tensor)."""
  bpe = bpe_util.train_bpe([f"What is {a} plus 2?" for a in range(9)])
  tokenizer = models.HFTokenizer(bpe, pad_id=0, bos_id=1, eos_id=2)
  policy = models.Transformer(
      models.preset("tiny", tokenizer.vocab_size, qkv_bias=True),
      rngs=nnx.Rngs(0),
  )
  models.save_pretrained(policy, path, tokenizer=tokenizer)
  if sharded:
    weight_map = dict.fromkeys(
        hf_config.name_table(policy.config), "model.safetensors"
    )
    with open(path / "model.safetensors.index.json", "w") as f:
      json.dump({"weight_map": weight_map}, f)
  return path / "model.safetensors"


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_weights_file_is_one_line_naming_it(
    tmp_path, sharded, damage
):
  weights = _hf_dir(tmp_path / "hf", sharded)
  data = weights.read_bytes()
  weights.write_bytes(
      data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64
  )
  config = train_util.tiny("grpo", steps=1, init_from=str(tmp_path / "hf"))
  config.model = base.get_config().model  # The shape is the directory's.
  with pytest.raises(errors.UserError) as failure:
    main.run(config, str(tmp_path / "run"))
  line = main.error_line(failure.value)
  assert main.is_user_error(failure.value) and "\n" not in line
  assert line.startswith(f"error: {weights} is not a readable safetensors")
  assert not (tmp_path / "run" / "checkpoints").exists()
