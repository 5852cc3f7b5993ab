"""experiments/perf/decode_collectives.py: a decode step's collectives on a
TPU mesh (compiled ahead of time on this host; needs libtpu)."""

import pytest

from experiments.perf import decode_collectives


def test_fsdp_decoding_all_reduces_where_a_replicated_mesh_does_not():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: pip install -e '.[plan]'",
  )
  args = dict(questions=4, group=2, prompt_len=8, new_tokens=8)
  data = decode_collectives.measure("qwen2_2.9m", "v5e-8", {"data": 8}, **args)
  fsdp = decode_collectives.measure(
      "qwen2_2.9m", "v5e-8", {"data": 2, "fsdp": 4}, **args
  )
  # Rows split over data alone: every weight is on every chip, nothing to
  # exchange. Weights split over fsdp: partial sums or gathers every layer.
  assert data["collective_ops"] == 0 and data["collective_bytes"] == 0
  assert fsdp["collective_ops"] > 0 and fsdp["collective_bytes"] > 0
  assert fsdp["ici_seconds"] == fsdp["collective_bytes"] / 200e9
  assert fsdp["weights_bytes"] < data["weights_bytes"]
