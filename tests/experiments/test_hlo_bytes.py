"""experiments/hlo_bytes.py on a hand-written TPU-style program: a weight
slice prefetched from HBM into on-chip memory (S(1)), then a fusion that
reads it there."""

from experiments import hlo_bytes

_HLO = """\
HloModule jit_step, entry_computation_layout={...}

%fused (a: f32[4,32], b: bf16[16,32]) -> f32[4,16] {
  %a = f32[4,32]{1,0} parameter(0)
  %b = bf16[16,32]{1,0:S(1)} parameter(1)
  ROOT %d = f32[4,16]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

ENTRY %main (p0: bf16[64,32], p1: f32[4,32]) -> f32[4,16] {
  %param.0 = bf16[64,32]{1,0} parameter(0)
  %param.1 = f32[4,32]{1,0} parameter(1)
  %slice-start = ((bf16[64,32]{1,0}), bf16[16,32]{1,0:S(1)}, s32[]{:S(2)}) slice-start(%param.0), slice={[0:16], [0:32]}
  %slice-done = bf16[16,32]{1,0:S(1)} slice-done(%slice-start)
  ROOT %fusion = f32[4,16]{1,0} fusion(%param.1, %slice-done), kind=kOutput, calls=%fused
}
"""
_SLICE = 16 * 32 * 2  # The bfloat16 slice moved.
_X, _OUT = 4 * 32 * 4, 4 * 16 * 4


def test_every_byte_counts_both_ends_of_a_copy_and_the_read_on_chip():
  rows = {name: n for n, name, _ in hlo_bytes.breakdown(_HLO)}
  assert rows == {"slice-start": 2 * _SLICE, "fusion": _X + _SLICE + _OUT}


def test_hbm_bytes_count_the_prefetch_once_and_not_the_read_on_chip():
  rows = {name: n for n, name, _ in hlo_bytes.breakdown(_HLO, hbm=True)}
  assert rows == {"slice-start": _SLICE, "fusion": _X + _OUT}
  assert hlo_bytes.hbm_bytes(_HLO) == _SLICE + _X + _OUT
