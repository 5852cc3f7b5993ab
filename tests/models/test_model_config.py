"""Model configs: presets and the checks of `ModelConfig`."""

from flax import nnx
import jax
import pytest

from ugrad.models import model_config
from ugrad.models import transformer as tr


def test_presets():
  for name, size in (("embedded", 0.53e6), ("qwen2_2.9m", 2.9e6)):
    cfg = model_config.preset(name, 20)
    params = nnx.state(nnx.eval_shape(lambda c=cfg: tr.Transformer(
        c, rngs=nnx.Rngs(0))), nnx.Param)
    count = sum(x.size for x in jax.tree.leaves(params))
    assert abs(count - size) / size < 0.05, (name, count)
  cfg = model_config.preset("qwen2_2.9m", 20)
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias) == (2, 64, True)
  assert model_config.preset("embedded", 30, num_layers=3).num_layers == 3
  with pytest.raises(ValueError, match="valid: embedded, tiny, qwen2_2.9m"):
    model_config.preset("gpt5", 20)


@pytest.mark.parametrize("bad, match", [
    (dict(num_kv_heads=3), "multiple of num_kv_heads"),
    (dict(hidden_size=30), "set head_dim"),
    (dict(head_dim=7), "even head_dim"),
    (dict(dtype="float33"), "not a dtype"),
])
def test_config_errors(bad, match):
  fields = dict(vocab_size=24, hidden_size=32, num_layers=2, num_heads=4,
                num_kv_heads=2, mlp_size=48)
  with pytest.raises(ValueError, match=match):
    model_config.ModelConfig(**(fields | bad))
