"""experiments/export.py: finished runs out to transformers and peft.

The full-model export is checked on a saved (untrained) run, with and
without a Hugging Face tokenizer; the PEFT export on a one-step LoRA GRPO
run over a Hugging Face base: `peft` puts the adapter on that base and its
logits are ugrad's adapted policy's.
"""

import json
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from experiments import export
from tests.helpers import bpe_util
from tests.helpers import sharded_step
from tests.helpers import train_util
from ugrad import errors
from ugrad import models
from ugrad.models import hf_peft
from ugrad.models import lora
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

transformers.logging.set_verbosity_error()

_ROWS = [
    {"question": f"What is {a} plus {b}?", "answer": f"#### {a + b}"}
    for a in range(3, 9)
    for b in range(2, 5)
]


def _tokenizer() -> models.HFTokenizer:
  bpe = bpe_util.train_bpe([r["question"] + "\n" + r["answer"] for r in _ROWS])
  return models.HFTokenizer(bpe, pad_id=0, bos_id=1, eos_id=2)


def _hf_base(path, tokenizer, seed: int = 0):
  """A Hugging Face directory of a tiny random Qwen2-like policy."""
  config = models.preset("tiny", tokenizer.vocab_size, qkv_bias=True)
  model = models.Transformer(config, rngs=nnx.Rngs(seed))
  models.save_pretrained(model, path, tokenizer=tokenizer)
  return model


def _finished_run(workdir, model, init_from: str = ""):
  """`model` saved as a finished run of the tiny SFT config."""
  runs.save_model(str(workdir), nnx.state(model, nnx.Param), model.config)
  config = train_util.tiny("sft", init_from=init_from)
  (workdir / runs.CONFIG_FILE).write_text(config.to_json())


def _batch(vocab: int):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, size=(2, 10)).astype(np.int32)
  mask = np.ones_like(tokens)
  tokens[1, :3], mask[1, :3] = 0, 0  # left padding
  return tokens, mask


def _torch_logits(model, tokens, mask) -> np.ndarray:
  mask_t = torch.tensor(mask, dtype=torch.long)
  with torch.no_grad():
    out = model(
        input_ids=torch.tensor(tokens, dtype=torch.long),
        attention_mask=mask_t,
        position_ids=torch.clamp(mask_t.cumsum(-1) - 1, min=0),
    )
  return out.logits.float().numpy()


def _assert_same_logits(torch_model, ugrad_model, vocab: int):
  tokens, mask = _batch(vocab)
  want = np.asarray(ugrad_model(jnp.asarray(tokens), jnp.asarray(mask)))
  got = _torch_logits(torch_model, tokens, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_a_finished_run_loads_in_transformers(tmp_path, with_tokenizer):
  tokenizer = _tokenizer()
  init_from = ""
  if with_tokenizer:  # The run trained from a Hugging Face directory.
    _hf_base(tmp_path / "hf", tokenizer)
    init_from = str(tmp_path / "hf")
  model_config = models.preset("tiny", tokenizer.vocab_size)
  model = models.Transformer(model_config, rngs=nnx.Rngs(3))
  (tmp_path / "run").mkdir()
  _finished_run(tmp_path / "run", model, init_from)
  out = tmp_path / "out"
  line = export.export(str(tmp_path / "run"), str(out))
  assert line.endswith(f"with{'' if with_tokenizer else 'out'} a tokenizer")
  assert (out / "tokenizer.json").is_file() == with_tokenizer
  loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  _assert_same_logits(loaded, model, tokenizer.vocab_size)
  if with_tokenizer:
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = _ROWS[0]["question"]
    assert hf_tok.encode(text) == tokenizer.encode(text)
    assert hf_tok.pad_token_id == 0 and hf_tok.eos_token_id == 2


def test_bad_input_is_one_line(tmp_path):
  model = models.Transformer(models.preset("tiny", 40), rngs=nnx.Rngs(0))
  (tmp_path / "run").mkdir()
  _finished_run(tmp_path / "run", model)
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "x").write_text("")
  (tmp_path / "unfinished").mkdir()
  (tmp_path / "unfinished" / runs.CONFIG_FILE).write_text("{}")
  run, out = str(tmp_path / "run"), str(tmp_path / "out")
  cases = [
      (("/no/such/run", out), "no such directory"),
      ((str(tmp_path / "unfinished"), out), "holds an unfinished run"),
      ((run, str(tmp_path / "used")), "is not an empty directory"),
      ((run, out, "peft"), "trained every weight"),
  ]
  for args, message in cases:
    with pytest.raises(errors.UserError, match=message) as err:
      export.export(*args)
    assert "\n" not in str(err.value)
  assert not os.path.exists(out)
  # The command prints the line, no traceback.
  done = subprocess.run(
      [sys.executable, "-m", "experiments.export", f"--checkpoint={run}"]
      + [f"--out={tmp_path / 'used'}"],
      capture_output=True,
      text=True,
      check=False,
  )
  assert done.returncode != 0
  assert "Traceback" not in done.stderr
  assert "is not an empty directory" in done.stderr


def test_target_modules_are_short_names_only_when_every_layer_has_them():
  config = models.preset("tiny", 40, num_layers=3)
  every = [f"model.layers.{i}.self_attn.q_proj" for i in range(3)]
  assert hf_peft.target_modules(every, config) == ["q_proj"]
  assert hf_peft.target_modules(every[1:], config) == every[1:]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
  """(trainer, HF base dir, workdir) of a one-step LoRA GRPO run over a
  Hugging Face base on JSONL data, adapters on q and v only."""
  tmp = tmp_path_factory.mktemp("lora")
  for split, part in (("train", _ROWS[:12]), ("test", _ROWS[12:])):
    with open(tmp / f"{split}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in part)
  _hf_base(tmp / "hf", _tokenizer())
  config = train_util.tiny("grpo", steps=1, init_from=str(tmp / "hf"))
  config.task = "gsm8k"
  config.data.train_path = str(tmp / "train.jsonl")
  config.data.test_path = str(tmp / "test.jsonl")
  config.reward = sharded_step.LENGTH_REWARD
  config.lora.rank = 4
  config.lora.targets = r"self_attn/[qv]_proj$"
  config.optim.lr = 1e-2  # adapters that move the logits visibly
  trainer = trainer_lib.Trainer(config, str(tmp / "run"))
  trainer.train()
  return trainer, tmp / "hf", tmp / "run"


@pytest.mark.slow
def test_peft_loads_the_adapter_onto_the_base(lora_run, tmp_path):
  peft = pytest.importorskip("peft")
  trainer, base_dir, workdir = lora_run
  adapted = nnx.merge(
      trainer.policy.graphdef, trainer.learner.full(trainer.state["params"])
  )
  vocab = adapted.config.vocab_size
  out = tmp_path / "adapter"
  line = export.export(str(workdir), str(out), "peft")
  assert f"over {base_dir}" in line
  adapter_config = json.loads((out / hf_peft.CONFIG_FILE).read_text())
  assert adapter_config["base_model_name_or_path"] == str(base_dir)
  assert adapter_config["target_modules"] == ["q_proj", "v_proj"]
  base = transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()
  tokens, mask = _batch(vocab)
  before = _torch_logits(base, tokens, mask)
  with_adapter = peft.PeftModel.from_pretrained(base, out).eval()
  _assert_same_logits(with_adapter, adapted, vocab)
  assert np.abs(_torch_logits(with_adapter, tokens, mask) - before).max() > 1e-3
  # And back: init_from the adapter directory is the adapted policy.
  graphdef, params, _ = runs.load_policy(str(out))
  _assert_same_logits(with_adapter, nnx.merge(graphdef, params), vocab)
  # The merged export is PEFT's merge of the same adapter.
  merged_dir = tmp_path / "merged"
  export.export(str(workdir), str(merged_dir), "merged")
  merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir).eval()
  _assert_same_logits(merged, adapted, vocab)
  want = with_adapter.merge_and_unload().state_dict()
  for name, tensor in merged.state_dict().items():
    torch.testing.assert_close(tensor, want[name], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_peft_export_needs_a_saved_base(lora_run, tmp_path):
  _, _, workdir = lora_run
  config = runs.read_config(str(workdir))
  config.init_from = ""
  (tmp_path / "run").mkdir()
  for name in (runs.MODEL_FILE, runs.POLICY_DIR):
    os.symlink(workdir / name, tmp_path / "run" / name)
  (tmp_path / "run" / runs.CONFIG_FILE).write_text(config.to_json())
  with pytest.raises(errors.UserError, match="freshly initialised base"):
    export.export(str(tmp_path / "run"), str(tmp_path / "out"), "peft")


def _random_adapters(model, targets: str, seed: int = 5):
  """`model` with rank-2 adapters whose B is random (not PEFT's zeros)."""
  spec = lora.LoRASpec(2, 4.0, targets)
  lora.attach(model, spec, seed)
  for _, adapter in nnx.iter_graph(model):
    if isinstance(adapter, lora.Adapter):
      adapter.b[...] = 0.1 * jax.random.normal(
          jax.random.key(seed), adapter.b[...].shape
      )
      seed += 1
  return spec


def test_init_from_a_peft_directory_is_its_base_with_the_adapter(tmp_path):
  tokenizer = _tokenizer()
  base = _hf_base(tmp_path / "hf", tokenizer)
  spec = _random_adapters(base, r"layers/0/(self_attn/k|mlp/down)_proj$")
  _, adapters = lora.split(nnx.state(base, nnx.Param))
  hf_peft.save(tmp_path / "peft", adapters, spec, base.config, "unused")
  config_file = tmp_path / "peft" / hf_peft.CONFIG_FILE
  peft_config = json.loads(config_file.read_text())
  assert peft_config["target_modules"] == ["down_proj", "k_proj"]
  peft_config["base_model_name_or_path"] = str(tmp_path / "hf")
  config_file.write_text(json.dumps(peft_config))
  graphdef, params, loaded_tok = runs.load_policy(str(tmp_path / "peft"))
  assert loaded_tok.vocab_size == tokenizer.vocab_size
  # What init_from and the tokenizer search see: the base plus adapter.
  train_config = train_util.tiny("sft", init_from=str(tmp_path / "peft"))
  assert runs.run_tokenizer(train_config).vocab_size == tokenizer.vocab_size
  tokens, mask = _batch(tokenizer.vocab_size)
  want = base(jnp.asarray(tokens), jnp.asarray(mask))
  got = nnx.merge(graphdef, params)(jnp.asarray(tokens), jnp.asarray(mask))
  real = mask.astype(bool)
  np.testing.assert_allclose(
      np.asarray(got)[real], np.asarray(want)[real], atol=1e-5, rtol=0
  )
  plain, _ = models.from_pretrained(tmp_path / "hf")
  off = plain(jnp.asarray(tokens), jnp.asarray(mask))
  assert np.abs(np.asarray(off - want)[real]).max() > 1e-3
  # An adapter naming no base, or a tensor of no projection: one line.
  peft_config["base_model_name_or_path"] = ""
  config_file.write_text(json.dumps(peft_config))
  with pytest.raises(errors.UserError, match="names no base_model") as err:
    runs.load_policy(str(tmp_path / "peft"))
  assert "\n" not in str(err.value)
