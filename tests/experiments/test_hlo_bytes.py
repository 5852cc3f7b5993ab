"""experiments/hlo_bytes.py on a hand-written TPU-style program: a weight
slice prefetched from HBM into on-chip memory (S(1)), then a fusion that
reads it there."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import hlo_bytes
from experiments import plan_compile

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


_COLLECTIVES_HLO = """\
HloModule jit_step, num_partitions=8

ENTRY %main (p0: f32[2,1024]) -> f32[16,1024] {
  %p0 = f32[2,1024]{1,0} parameter(0)
  %ar = f32[2,1024]{1,0} all-reduce(%p0), channel_id=1, replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  %ags = (f32[2,1024]{1,0}, f32[16,1024]{1,0}) all-gather-start(%ar), channel_id=2, replica_groups=[1,8]<=[8], dimensions={0}
  %agd = f32[16,1024]{1,0} all-gather-done(%ags)
  %rs = f32[1,1024]{1,0} reduce-scatter(%p0), channel_id=3, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, dimensions={0}, to_apply=%add
  ROOT %cp = f32[16,1024]{1,0} collective-permute(%agd), channel_id=4, source_target_pairs={{0,1},{1,0}}
}
"""


def test_collectives_count_what_each_chip_receives_in_every_group_form():
  row = 1024 * 4  # one f32 row
  assert hlo_bytes.collectives(_COLLECTIVES_HLO) == {
      # 2 rows over groups of 4 (listed): a ring's 2 x 3 / 4 of them.
      "all-reduce": {"ops": 1, "bytes": int(2 * 2 * row * 3 / 4)},
      # 16 rows gathered over 8 (iota form), at the start only: 7 / 8.
      "all-gather": {"ops": 1, "bytes": 14 * row},
      # 1 row of 2 scattered over axis_0 (2 chips, mesh form): 1 / 2 of 2.
      "reduce-scatter": {"ops": 1, "bytes": row},
      "collective-permute": {"ops": 1, "bytes": 16 * row},
  }


def test_a_tpu_compile_s_all_gather_is_counted_from_its_own_text():
  pytest.importorskip(
      "libtpu",
      reason="compiling for TPU needs libtpu: pip install -e '.[plan]'",
  )
  devices = plan_compile.topology_devices("v5e-8")
  mesh = jax.sharding.Mesh(np.array(devices), ("x",))
  split = jax.sharding.NamedSharding(mesh, jax.P("x"))
  whole = jax.sharding.NamedSharding(mesh, jax.P())
  x = jax.ShapeDtypeStruct((8 * 128, 256), jnp.float32, sharding=split)
  compiled = plan_compile.compile_for_tpu(
      jax.jit(lambda a: a * 2, out_shardings=whole), x
  )
  found = hlo_bytes.collectives(compiled.as_text())
  # Each chip receives the 7 / 8 of the result it does not hold.
  assert found["all-gather"]["bytes"] == 7 * 128 * 256 * 4
