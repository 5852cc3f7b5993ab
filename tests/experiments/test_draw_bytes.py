"""The sampler's draw reads the logits once on a TPU (compiled ahead of
time on this host; needs libtpu)."""

import pytest

from experiments.perf import draw_bytes


@pytest.mark.slow
def test_the_draw_reads_the_logits_once_where_the_two_pass_read_them_more():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: pip install -e '.[plan]'",
  )
  rows, vocab = 64, 8192
  logits = rows * vocab * 2  # bfloat16
  one = draw_bytes.measure(draw_bytes.one_pass, "v5e-8", rows, vocab)
  two = draw_bytes.measure(draw_bytes.two_pass, "v5e-8", rows, vocab)
  # One read of the logits; the tokens and log-probs written (4 bytes each
  # a row, in padded tiles) and the key read add under 1 KB.
  assert logits <= one["hbm"] <= logits + 1024
  assert two["hbm"] >= 3 * logits
