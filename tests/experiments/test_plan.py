"""experiments/plan.py: Cloud TPU names, and a small plan compiled for v5e-8.

The compile needs libtpu, which the `test` extra installs on Linux x86-64
(as `plan` does); elsewhere that test is skipped.
"""

import pytest

from experiments import plan as plan_lib
from experiments import plan_compile
from experiments import plan_report
from experiments.configs import grpo


def test_topology_names():
  assert plan_compile.topology_name("v5p-8") == ("v5p", "v5p:2x2x1")
  assert plan_compile.topology_name("v5p-16") == ("v5p", "v5p:2x2x2")
  assert plan_compile.topology_name("v5e-8") == ("v5e", "v5e:2x4")
  assert plan_compile.topology_name("v6e-8") == ("v6e", "v6e:2x4")
  with pytest.raises(
      ValueError, match="'v4-8'; valid: v5e-8, v5p-8, v5p-16, v6e-8"
  ):
    plan_compile.topology_name("v4-8")


def test_mfu():
  result = {
      "step": {"analytic_flops": 8 * 197e12 * 0.5},
      "chips": 8,
      "peak_flops_per_chip": 197e12,
  }
  assert plan_report.mfu(result, 2.0) == pytest.approx(0.25)


@pytest.mark.slow
def test_small_plan_on_v5e_8():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: " "pip install -e '.[plan]'",
  )
  config = grpo.get_config()
  config.model = "qwen2_2.9m"
  config.remat = "full"
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  config.sampling.update(dict(questions=4, group_size=2, max_new_tokens=8))
  vocab = 32
  result = plan_lib.plan(config, "v5e-8", prompt_len=8, vocab_size=vocab)
  assert result["chips"] == 8 and result["chip"] == "v5e"
  assert result["mesh"] == dict(dcn_data=1, data=2, fsdp=2, tensor=2)

  # By hand, from the rules: embed over fsdp=2; heads, kv_heads, mlp and
  # vocab over tensor=2. A [D, X] kernel is split 4 ways, a bias over
  # heads or a norm scale over embed 2 ways; float32 parameters.
  d, f, layers = 256, 688, 4
  q, kv = 4 * 64, 2 * 64
  per_layer = (
      d * q / 4
      + q / 2
      + 2 * (d * kv / 4 + kv / 2)
      + q * d / 4
      + 3 * d * f / 4
      + 2 * d / 2
  )
  count = vocab * d / 4 + layers * per_layer + d / 2  # tied embedding
  assert result["params_bytes_per_chip"] == 4 * count
  assert result["num_params"] == (
      vocab * d
      + d
      + layers * (d * q + q + 2 * (d * kv + kv) + q * d + 3 * d * f + 2 * d)
  )
  # Adam's two moments are sharded like the parameters (and two counts).
  assert (
      2 * 4 * count
      <= result["opt_state_bytes_per_chip"]
      <= (2 * 4 * count + 64)
  )
  update = result["functions"]["update"]["memory"]
  assert update["argument"] >= (
      result["params_bytes_per_chip"] + result["opt_state_bytes_per_chip"]
  )
  for name, f in result["functions"].items():
    assert f["memory"]["peak"] > 0, name
    assert f["fits"], name
    assert f["compiled_flops_per_chip"] > 0, name
  assert result["fits"]
  assert "DOES NOT FIT" not in plan_report.format_plan(result, 1.0)
