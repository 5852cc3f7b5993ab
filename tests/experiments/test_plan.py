"""experiments/plan.py: Cloud TPU names, the roofline, and a small plan
compiled for v5e-8.

The compile needs libtpu, which the `test` extra installs on Linux x86-64
(as `plan` does); elsewhere that test is skipped.
"""

import jax
import pytest

from experiments import plan as plan_lib
from experiments import plan_compile
from experiments import plan_report
from experiments import plan_roofline
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


def test_chip_table_has_bandwidths_and_sources():
  for name, chip in plan_compile.CHIPS.items():
    assert chip.hbm_bytes_per_second > 1e11, name
    assert chip.source.startswith("https://cloud.google.com/tpu/docs/"), name
    assert chip.ici_bytes_per_second >= 4e11, name
  assert plan_compile.CHIPS["v5e"].hbm_bytes_per_second == 819e9


def test_roofline_is_the_slower_of_compute_and_memory():
  chip = plan_compile.Chip(0, 100.0, 10.0, "")
  memory = plan_roofline.roofline(dict(flops=100.0, bytes_accessed=50.0), chip)
  assert memory["roofline_seconds"] == 5.0 and memory["bound"] == "memory"
  assert memory["mfu"] == pytest.approx(100 / (100 * 5.0))
  compute = plan_roofline.roofline(dict(flops=1e3, bytes_accessed=1.0), chip)
  assert compute["roofline_seconds"] == 10.0 and compute["bound"] == "compute"
  assert compute["mfu"] == 1.0
  missing = plan_roofline.roofline(dict(flops=None, bytes_accessed=1), chip)
  assert "roofline_seconds" not in missing


def test_a_compile_failure_is_one_line_and_the_rest_is_reported(monkeypatch):
  def refuse(*_):
    raise jax.errors.JaxRuntimeError(
        "INVALID_ARGUMENT: Invalid TPU program\n  at some op"
    )

  monkeypatch.setattr(plan_compile, "compile_for_tpu", refuse)
  compiled, out = plan_roofline.compile_one(None, (), plan_compile.CHIPS["v5e"])
  assert compiled is None
  assert out == {"error": "INVALID_ARGUMENT: Invalid TPU program at some op"}
  memory = dict(argument=1, output=1, temp=1, alias=0, peak=2e9, code=1)
  ok = dict(
      memory=memory,
      peak_with_resident_state=3e9,
      fits=True,
      compiled_flops_per_chip=1e12,
      analytic_flops_per_chip=1e12,
      roofline=plan_roofline.roofline(
          dict(flops=1e12, bytes_accessed=1e9), plan_compile.CHIPS["v5e"]
      ),
  )
  result = dict(
      model="m",
      topology="v5e-8",
      jax_topology="v5e:2x4",
      chip="v5e",
      chips=8,
      mesh=dict(data=8),
      num_params=1e9,
      compute_dtype="bfloat16",
      remat="none",
      micro_batches=1,
      questions=8,
      group_size=16,
      rows=128,
      prompt_len=512,
      max_new_tokens=1024,
      hbm_bytes_per_chip=16 * 2**30,
      hbm_bytes_per_second=819e9,
      params_bytes_per_chip=1,
      opt_state_bytes_per_chip=1,
      reference_bytes_per_chip=1,
      grads_bytes_per_chip=1,
      kv_cache_bytes=1,
      kv_cache_bytes_per_chip=1,
      peak_flops_per_chip=197e12,
      functions=dict(sample=ok, update=out),
      failed=dict(update=out["error"]),
      peak_bytes_per_chip=3e9,
      fits=False,
      step=dict(analytic_flops=1.0, forward_passes=1),
  )
  text = plan_report.format_plan(result)
  assert "  update      FAILED TO COMPILE: INVALID_ARGUMENT: " in text
  assert "UNKNOWN: update failed to compile" in text
  assert "  sample       1.000e+12" in text  # its roofline row
  assert "failed to compile: update" in plan_report.table_row(result)


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
  # Adam's two moments are sharded like the parameters and split over
  # data=2 too (every parameter has a dimension it divides); two counts.
  assert 4 * count <= result["opt_state_bytes_per_chip"] <= 4 * count + 64
  update = result["functions"]["update"]["memory"]
  assert update["argument"] >= (
      result["params_bytes_per_chip"] + result["opt_state_bytes_per_chip"]
  )
  chip = plan_compile.CHIPS["v5e"]
  assert set(result["functions"]) == {
      "sample",
      "logprobs",
      "update",
      "decode_step",
  }
  for name, f in result["functions"].items():
    assert f["memory"]["peak"] > 0, name
    assert f["fits"], name
    assert f["compiled_flops_per_chip"] > 0, name
    roof = f["roofline"]
    assert roof["flops"] == f["compiled_flops_per_chip"], name
    assert roof["bytes_accessed"] > 0, name
    assert roof["roofline_seconds"] == max(
        roof["flops"] / chip.peak_bf16_flops,
        roof["bytes_accessed"] / chip.hbm_bytes_per_second,
    ), name
    assert 0 < roof["mfu"] <= 1, name
  assert result["fits"] and not result["failed"]

  # The decode step at slot P + N / 2 = 12 of the sampler's 16: it must
  # read every weight in bfloat16 (half the float32 parameters) and the
  # 12-slot prefix of its 8 / 4 rows and 2 / 2 kv heads (4 layers, 64 wide).
  step = result["functions"]["decode_step"]
  assert step["index"] == 12 and step["cache_slots"] == 16
  assert step["weights_bytes"] == result["params_bytes_per_chip"] // 2
  assert step["kv_prefix_bytes"] == 2 * layers * 2 * 12 * 1 * 64 * 2
  assert step["min_bytes"] == step["weights_bytes"] + step["kv_prefix_bytes"]
  assert step["bytes_accessed"] == step["roofline"]["bytes_accessed"]
  assert step["bytes_accessed"] >= step["min_bytes"]
  assert step["bytes_over_min"] == step["bytes_accessed"] / step["min_bytes"]
  assert 0 < step["hbm_bytes"] <= step["bytes_accessed"]
  assert step["hbm_bytes_over_min"] == step["hbm_bytes"] / step["min_bytes"]
  # Its collectives over the mesh (data=2 x fsdp=2 x tensor=2: partial
  # sums of sharded weights at least), timed at half of v5e's 400 GB/s.
  assert step["collective_ops"] > 0 and step["collective_bytes"] > 0
  assert step["ici_seconds"] == step["collective_bytes"] / 200e9
  assert step["hbm_seconds"] == step["hbm_bytes"] / chip.hbm_bytes_per_second
  text = plan_report.format_plan(result, 1.0)
  assert "roofline per chip (v5e: 197 TFLOP/s bf16, 819 GB/s HBM" in text
  assert "decode step at slot 12 of 16: reads" in text
  assert "collectives:" in text and "ms over ICI against" in text
  assert "DOES NOT FIT" not in plan_report.format_plan(result, 1.0)


def _tiny_lora_model(base_dtype: str):
  config = grpo.get_config()
  config.model = "qwen2_2.9m"
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  config.lora.rank = 8
  config.lora.base_dtype = base_dtype
  return config, plan_compile.model_on_mesh(config, "v5e-8", 32)


def test_a_lora_plan_trains_the_adapters_over_a_frozen_base():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: " "pip install -e '.[plan]'",
  )
  from experiments import plan_lora  # pylint: disable=import-outside-toplevel
  from ugrad.training import lora_config  # pylint: disable=import-outside-toplevel

  config = grpo.get_config()
  config.model = "qwen2_2.9m"
  plain = plan_compile.model_on_mesh(config, "v5e-8", 32)
  full = plan_lora.parts(plain, None)
  assert full.frozen is None and full.params is plain.params
  sizes = {}
  for base_dtype in ("", "nf4"):
    config, m = _tiny_lora_model(base_dtype)
    part = plan_lora.parts(m, lora_config.lora_spec(config))
    leaves = jax.tree.leaves(
        part.params, is_leaf=lambda x: hasattr(x, "get_metadata")
    )
    assert all(type(v).__name__ == "LoRAParam" for v in leaves)
    sizes[base_dtype] = (
        plan_compile.bytes_per_chip(part.params),
        part.frozen_bytes,
        plan_lora.count_params(m.abstract_params),
    )
  # The same adapters; the same parameter count (adapters included, nf4
  # scales not); the nf4 base in well under a third of the float32 one
  # (its embedding stays float32).
  assert sizes[""][0] == sizes["nf4"][0] > 0
  assert (
      sizes[""][2]
      == sizes["nf4"][2]
      > plan_lora.count_params(plain.abstract_params)
  )
  assert sizes["nf4"][1] < sizes[""][1] / 2
