"""experiments/plan_lora.py: what a LoRA plan keeps resident, no compile."""

import pytest

from experiments import plan_lora
from experiments.configs import grpo


def test_an_nf4_base_keeps_a_fraction_of_the_float32_one():
  pytest.importorskip("libtpu", reason="TPU topologies need libtpu")
  sizes = {}
  for base_dtype in ("", "nf4"):
    config = grpo.get_config()
    config.model = "qwen2_2.9m"
    config.lora.rank = 8
    config.lora.base_dtype = base_dtype
    sizes[base_dtype] = plan_lora.resident(config, "v5e-8", 32)
  assert sizes[""]["trained"] == sizes["nf4"]["trained"] > 0
  assert sizes["nf4"]["frozen_base"] < sizes[""]["frozen_base"] / 2
  for size in sizes.values():
    assert size["total"] == (
        size["frozen_base"] + 3 * size["trained"] + size["optimizer"]
    )
