"""Hugging Face bridge: tiny random transformers models against ugrad."""

import copy
import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import tokenizers
import torch
import transformers

from tests.helpers import bpe_util
from ugrad import models
from ugrad import sampling
from ugrad.models import hf
from ugrad.models import hf_config
from ugrad.models import hf_tokenizer
from ugrad.models import sharding

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

VOCAB = 96
# Left padding of each row of the test batch (row 0 has none).
PADS = (0, 3, 5)
PAD_ID = 0


def _perturb(model: torch.nn.Module) -> None:
  """Non-trivial norms and biases, so a swapped mapping changes logits."""
  torch.manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.2 * torch.randn_like(p))


def _qwen2_tied() -> transformers.PreTrainedModel:
  config = transformers.Qwen2Config(
      vocab_size=VOCAB,
      hidden_size=64,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      rope_theta=5000.0,
      rms_norm_eps=1e-5,
      tie_word_embeddings=True,
      initializer_range=0.1,
  )
  return transformers.Qwen2ForCausalLM(config)


def _llama_untied() -> transformers.PreTrainedModel:
  # head_dim 32 with 4 heads != hidden 64: exercises the explicit head_dim.
  config = transformers.LlamaConfig(
      vocab_size=VOCAB,
      hidden_size=64,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=1,
      head_dim=32,
      rms_norm_eps=1e-6,
      tie_word_embeddings=False,
      initializer_range=0.1,
      bos_token_id=1,
      eos_token_id=2,
  )
  return transformers.LlamaForCausalLM(config)


_BUILDERS = {"qwen2_tied": _qwen2_tied, "llama_untied": _llama_untied}


@pytest.fixture(scope="module", params=sorted(_BUILDERS))
def hf_model(request, tmp_path_factory):
  """(torch model, directory it was saved to) for each architecture."""
  torch.manual_seed(0)
  model = _BUILDERS[request.param]().eval()
  _perturb(model)
  path = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(path)
  return model, path


def _batch() -> tuple[np.ndarray, np.ndarray]:
  """Left-padded tokens [B, T] and attention mask [B, T]."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, VOCAB, size=(len(PADS), 8)).astype(np.int32)
  mask = np.ones_like(tokens)
  for row, pad in enumerate(PADS):
    tokens[row, :pad] = PAD_ID
    mask[row, :pad] = 0
  return tokens, mask


def _torch_logits(model, tokens, mask) -> np.ndarray:
  """transformers logits [B, T, V] with positions counted from the mask."""
  mask_t = torch.tensor(mask, dtype=torch.long)
  positions = torch.clamp(mask_t.cumsum(-1) - 1, min=0)
  with torch.no_grad():
    out = model(
        input_ids=torch.tensor(tokens, dtype=torch.long),
        attention_mask=mask_t,
        position_ids=positions,
    )
  return out.logits.float().numpy()


def _ugrad_logits(model, tokens, mask) -> np.ndarray:
  """ugrad logits [B, T, V] for left-padded tokens."""
  return np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))


def test_logits_match_transformers(hf_model):
  torch_model, path = hf_model
  model, tokenizer = hf.from_pretrained(path, dtype="float32")
  assert tokenizer is None  # No tokenizer.json was saved.
  tokens, mask = _batch()
  want = _torch_logits(torch_model, tokens, mask)
  got = _ugrad_logits(model, tokens, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)


def test_export_reloads_in_transformers(hf_model, tmp_path):
  torch_model, path = hf_model
  model, _ = hf.from_pretrained(path)
  hf.save_pretrained(model, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  assert type(reloaded) is type(torch_model)
  want = torch_model.state_dict()
  got = reloaded.state_dict()
  assert sorted(got) == sorted(want)
  for name, tensor in want.items():
    torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
  tokens, mask = _batch()
  np.testing.assert_allclose(
      _torch_logits(reloaded, tokens, mask),
      _torch_logits(torch_model, tokens, mask),
      atol=1e-5,
      rtol=0,
  )


def test_bfloat16_checkpoint(hf_model, tmp_path):
  torch_model, _ = hf_model
  half = copy.deepcopy(torch_model).to(torch.bfloat16)
  half.save_pretrained(tmp_path)
  want = half.model.norm.weight.detach()
  model32, _ = hf.from_pretrained(tmp_path, dtype="float32")
  model16, _ = hf.from_pretrained(tmp_path, dtype="bfloat16")
  assert model32.norm.scale.get_value().dtype == jnp.float32
  assert model16.norm.scale.get_value().dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(model32.norm.scale.get_value()), want.float().numpy()
  )
  hf.save_pretrained(model16, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / "out", dtype=torch.bfloat16
  )
  torch.testing.assert_close(reloaded.model.norm.weight, want, rtol=0, atol=0)


def test_sharded_checkpoint(hf_model, tmp_path):
  torch_model, path = hf_model
  torch_model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  assert len(list(tmp_path.glob("*.safetensors"))) > 1
  sharded, _ = hf.from_pretrained(tmp_path)
  single, _ = hf.from_pretrained(path)
  for got, want in zip(
      jax.tree.leaves(nnx.state(sharded)),
      jax.tree.leaves(nnx.state(single)),
      strict=True,
  ):
    np.testing.assert_array_equal(got, want)


def test_load_puts_each_tensor_with_its_sharding(hf_model):
  _, path = hf_model
  single, _ = hf.from_pretrained(path)
  want = dict(nnx.to_flat_state(nnx.state(single, nnx.Param)))
  mesh = sharding.make_mesh(sharding.mesh_shape({"fsdp": -1}))
  shardings = sharding.param_shardings(
      nnx.state(single, nnx.Param), mesh, sharding.RULES
  )
  placed = list(nnx.to_flat_state(shardings))
  sharded, _ = hf.from_pretrained(path, shardings=shardings)
  got = dict(nnx.to_flat_state(nnx.state(sharded, nnx.Param)))
  assert sorted(got, key=str) == sorted(want, key=str)
  for name, target in placed:
    value = got[name].get_value()
    assert value.sharding == target.get_value(), name
    np.testing.assert_array_equal(value, want[name].get_value())
  with pytest.raises(ValueError, match="shardings do not match"):
    hf.from_pretrained(path, shardings=nnx.from_flat_state(placed[1:]))


def test_greedy_generation_matches_transformers(hf_model):
  torch_model, path = hf_model
  model, _ = hf.from_pretrained(path)
  tokens, mask = _batch()
  new_tokens = 6
  config = sampling.SamplingConfig(
      max_new_tokens=new_tokens, eos_id=None, pad_id=PAD_ID, temperature=0.0
  )
  graphdef, params = nnx.split(model)
  got = sampling.sample(
      graphdef,
      params,
      jnp.asarray(tokens),
      jnp.asarray(mask),
      jax.random.key(0),
      config,
  )
  with torch.no_grad():
    want = torch_model.generate(
        input_ids=torch.tensor(tokens, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        generation_config=transformers.GenerationConfig(
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=PAD_ID,
        ),
    )
  assert want.shape == (len(PADS), tokens.shape[1] + new_tokens)
  np.testing.assert_array_equal(np.asarray(got.tokens), want.numpy())
  # A random model decodes more than one distinct token.
  assert len(np.unique(want.numpy()[:, tokens.shape[1] :])) > 1


# ----------------------------------------------------------------- tokenizer

_SENTENCES = (
    "the cat sat on the mat",
    "48+27=75 and 75-19=56",
    "a tiny tokenizer trained on a few sentences",
    "#### 56",
)
_SPECIALS = ("<pad>", "<s>", "</s>")


def _train_tokenizer() -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer (exact round trips) with three specials."""
  return bpe_util.train_bpe(_SENTENCES, 300, _SPECIALS)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("tokenizer")
  _train_tokenizer().save(str(path / "tokenizer.json"))
  _write(
      path / "tokenizer_config.json",
      {
          "bos_token": "<s>",
          "eos_token": {"content": "</s>"},
          "pad_token": "<pad>",
      },
  )
  return path


def _write(file: pathlib.Path, data: dict) -> None:
  file.write_text(json.dumps(data))


def test_tokenizer_round_trip_and_special_ids(tokenizer_dir):
  tok = hf_tokenizer.HFTokenizer.from_directory(tokenizer_dir)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == tok.tokenizer.get_vocab_size()
  for text in _SENTENCES + ("unseen words: zebra 99!",):
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert not {tok.pad_id, tok.bos_id, tok.eos_id} & set(ids)
    assert tok.decode(ids) == text
    padded = [tok.pad_id, tok.bos_id] + ids + [tok.eos_id, tok.pad_id]
    assert tok.decode(np.asarray(padded)) == text


def test_tokenizer_fallbacks(tokenizer_dir, tmp_path):
  (tmp_path / "tokenizer.json").write_text(
      (tokenizer_dir / "tokenizer.json").read_text()
  )
  with pytest.raises(ValueError, match="No eos token"):
    hf_tokenizer.HFTokenizer.from_directory(tmp_path)
  # Ids from config.json (eos as a list), no pad anywhere: pad = eos.
  _write(tmp_path / "config.json", {"eos_token_id": [2, 1]})
  tok = hf_tokenizer.HFTokenizer.from_directory(tmp_path)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (2, None, 2)
  # generation_config.json wins over config.json.
  _write(tmp_path / "generation_config.json", {"eos_token_id": 1})
  assert hf_tokenizer.HFTokenizer.from_directory(tmp_path).eos_id == 1
  _write(tmp_path / "tokenizer_config.json", {"eos_token": "<nope>"})
  with pytest.raises(ValueError, match="<nope>"):
    hf_tokenizer.HFTokenizer.from_directory(tmp_path)


def test_tokenizer_saved_with_model_loads_in_transformers(
    hf_model, tokenizer_dir, tmp_path
):
  _, path = hf_model
  model, _ = hf.from_pretrained(path)
  tok = hf_tokenizer.HFTokenizer.from_directory(tokenizer_dir)
  hf.save_pretrained(model, tmp_path, tokenizer=tok)
  _, again = hf.from_pretrained(tmp_path)
  assert (again.pad_id, again.bos_id, again.eos_id) == (0, 1, 2)
  # Not AutoTokenizer: for model_type qwen2, transformers 5 rebuilds the
  # pre-tokenizer as Qwen's whatever tokenizer.json says.
  auto = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
  assert (auto.pad_token_id, auto.bos_token_id, auto.eos_token_id) == (0, 1, 2)
  text = _SENTENCES[1]
  assert auto(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
  config = transformers.AutoConfig.from_pretrained(tmp_path)
  assert (config.pad_token_id, config.eos_token_id) == (0, 2)


# -------------------------------------------------------------------- errors


def _qwen2_config(**changes) -> dict:
  config = _qwen2_tied().config.to_dict()
  config.update(changes)
  return config


def test_unsupported_architecture_is_named(tmp_path):
  _write(
      tmp_path / "config.json",
      _qwen2_config(architectures=["MistralForCausalLM"]),
  )
  with pytest.raises(ValueError, match="MistralForCausalLM"):
    hf.from_pretrained(tmp_path)
  config = _qwen2_config(model_type="gpt2")
  del config["architectures"]
  with pytest.raises(ValueError, match="gpt2"):
    hf_config.config_from_hf(config)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 5e5,
                    "factor": 8.0,
                }
            },
            "llama3",
        ),
        (
            {
                "use_sliding_window": True,
                "sliding_window": 16,
                "layer_types": ["full_attention", "sliding_attention"],
            },
            r"sliding-window attention on layers \[1\]",
        ),
        ({"hidden_act": "gelu"}, "gelu"),
    ],
)
def test_unrepresentable_config_is_refused(changes, message):
  with pytest.raises(ValueError, match=message):
    hf_config.config_from_hf(_qwen2_config(**changes))


def test_llama_attention_bias_is_refused():
  config = _llama_untied().config.to_dict()
  config["attention_bias"] = True
  with pytest.raises(ValueError, match="attention_bias"):
    hf_config.config_from_hf(config)


def test_legacy_rope_keys():
  config = _qwen2_config(rope_theta=1234.0, rope_scaling=None)
  del config["rope_parameters"]
  assert hf_config.config_from_hf(config).rope_theta == 1234.0


def _rewrite_weights(path: pathlib.Path, edit) -> None:
  file = path / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(file))
  edit(tensors)
  safetensors.numpy.save_file(tensors, str(file), metadata={"format": "pt"})


def test_missing_and_extra_tensors_are_named(hf_model, tmp_path):
  torch_model, _ = hf_model
  torch_model.save_pretrained(tmp_path)
  name = "model.layers.1.mlp.up_proj.weight"
  kept = {}
  _rewrite_weights(tmp_path, lambda t: kept.update({name: t.pop(name)}))
  with pytest.raises(ValueError, match=name):
    hf.from_pretrained(tmp_path)
  _rewrite_weights(
      tmp_path,
      lambda t: t.update(
          kept,
          **{
              "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(
                  4, np.float32
              ),
              "model.layers.0.extra.weight": np.ones(4, np.float32),
          }
      ),
  )
  with pytest.raises(ValueError, match=r"model\.layers\.0\.extra\.weight"):
    hf.from_pretrained(tmp_path)
  _rewrite_weights(tmp_path, lambda t: t.pop("model.layers.0.extra.weight"))
  hf.from_pretrained(tmp_path)  # The inv_freq buffer is ignored by design.


def test_save_refuses_stale_shards_and_foreign_tokenizers(hf_model, tmp_path):
  torch_model, path = hf_model
  model, _ = hf.from_pretrained(path)
  torch_model.save_pretrained(tmp_path, max_shard_size="40KB")
  with pytest.raises(ValueError, match="model.safetensors.index.json"):
    hf.save_pretrained(model, tmp_path)
  with pytest.raises(TypeError, match="HFTokenizer"):
    hf.save_pretrained(model, tmp_path / "new", tokenizer=object())


def test_package_exports():
  assert models.from_pretrained is hf.from_pretrained
  assert models.save_pretrained is hf.save_pretrained
  assert models.HFTokenizer is hf_tokenizer.HFTokenizer


def test_wrong_shape_is_named(hf_model, tmp_path):
  torch_model, _ = hf_model
  torch_model.save_pretrained(tmp_path)
  name = "model.layers.0.self_attn.k_proj.weight"
  _rewrite_weights(tmp_path, lambda t: t.update({name: t[name][:-1]}))
  with pytest.raises(ValueError, match=name):
    hf.from_pretrained(tmp_path)
