"""The roofline side of `experiments.plan`: each compiled function's FLOPs
and bytes against the chip's peak and HBM bandwidth, and one decode step
compiled on its own.

Per function and per chip, from XLA's `cost_analysis()` of the TPU program
(a while-loop or scan body counted once, its FLOPs and its bytes alike):

* `flops`, `bytes_accessed`: the compiled program's FLOPs and HBM bytes read
  and written (XLA's "bytes accessed");
* `roofline_seconds` = max(flops / peak bf16 FLOP/s, bytes / HBM bandwidth),
  the least time the program could take on the chip, and `bound`: which
  term sets it ("compute" or "memory");
* `mfu` = flops / (peak x roofline_seconds): the share of the chip's peak
  that program's own FLOPs would use if it ran at its roofline (1.0 when
  compute-bound; flops / peak over bytes / bandwidth when memory-bound). It
  counts the FLOPs XLA emits (remat's recomputation included), so it is an
  upper bound on what a measured step time can give, not a prediction.

The decode step is the sampler's loop body (`model.hidden_cached` of one
token per row, then the logits) compiled alone, with the parameters as the
sampler gets them (the run's parameter dtype) and the sampler's KV cache of
P + N slots (layout "bhsd", rows over the batch axes, kv heads over tensor
where they divide) as it is in the loop's phase (`SamplingConfig.kv_block`)
that holds slot index P + N / 2, the middle of generation (the index is
traced, as in the loop: the program is the same at any slot of a phase).
`min_bytes` is what that step must read at least: every weight once in the
compute dtype and the P + N / 2 cache positions in use, per chip. Its
collectives (`collective_facts`): what each chip receives over ICI, and
the time that takes at half the chip's bidirectional ICI bandwidth (all
links receiving; each collective's latency not counted), against the time
of the step's HBM bytes: decode is collective-bound where it is over 1.
"""

import math
from typing import Optional

from flax import nnx
import jax
import jax.numpy as jnp

from experiments import hlo_bytes
from experiments import plan_compile
from ugrad.models import sharding as sharding_lib
from ugrad.models import transformer
from ugrad.sampling import layout
from ugrad.sampling import sampler as sampler_lib


def roofline(cost: dict, chip: plan_compile.Chip) -> dict:
  """The roofline figures of one compiled function's cost per chip."""
  flops, nbytes = cost.get("flops"), cost.get("bytes_accessed")
  out = dict(flops=flops, bytes_accessed=nbytes)
  if flops is None or nbytes is None:
    return out
  compute = flops / chip.peak_bf16_flops
  memory = nbytes / chip.hbm_bytes_per_second
  seconds = max(compute, memory)
  out.update(
      compute_seconds=compute,
      memory_seconds=memory,
      roofline_seconds=seconds,
      bound="compute" if compute >= memory else "memory",
      mfu=(flops / (chip.peak_bf16_flops * seconds)) if seconds else None,
  )
  return out


def _decode_step(graphdef, params, token, positions, kv_mask, cache, index):
  """One step of the sampler's decode loop: token [R] at cache slot
  `index` -> (logits [R, V], the updated cache)."""
  model = nnx.merge(graphdef, params)
  h, cache = model.hidden_cached(
      token[:, None], positions[:, None], kv_mask, cache, index
  )
  return model.logits(h[:, 0]), cache


decode_step = jax.jit(_decode_step, static_argnums=0, donate_argnums=5)


def splits(cfg, shape: dict, questions: int) -> tuple[int, int]:
  """(row shards, kv-head shards) of the sampler's KV cache on a mesh: rows
  over the batch axes where the prompts divide (`sampling.prompt_sharding`),
  kv heads over tensor where they divide."""
  row_split = sharding_lib.batch_shards(shape)
  row_split = row_split if questions % row_split == 0 else 1
  kv_split = shape["tensor"] if cfg.num_kv_heads % shape["tensor"] == 0 else 1
  return row_split, kv_split


def kv_bytes(cfg, rows: int, positions: int, dtype: str) -> int:
  """Bytes of keys and values of `positions` cache slots, every layer."""
  return (
      2
      * cfg.num_layers
      * rows
      * positions
      * cfg.num_kv_heads
      * cfg.head_dim
      * jnp.dtype(dtype).itemsize
  )


def decode_step_args(cfg, mesh, params, rows, slots, dtype, split):
  """The decode step's abstract arguments (after the graphdef); `split`:
  (row shards, kv-head shards) of the cache, from `splits`."""
  row_split, kv_split = split
  batch = sharding_lib.BATCH_AXES if row_split > 1 else None
  heads = "tensor" if kv_split > 1 else None

  def sharded(spec):
    return jax.sharding.NamedSharding(mesh.mesh, jax.P(*spec))

  cache = jax.eval_shape(
      lambda: transformer.init_cache(cfg, rows, slots, "bhsd")
  )
  cache = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
          x.shape, dtype, sharding=sharded((batch, heads, None, None))
      ),
      cache,
  )
  per_row = sharded((batch,))
  return (
      params,
      jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=per_row),
      jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=per_row),
      jax.ShapeDtypeStruct(
          (rows, slots), jnp.int32, sharding=sharded((batch,))
      ),
      cache,
      jax.ShapeDtypeStruct((), jnp.int32, sharding=sharded(())),
  )


def min_bytes(cfg, params, rows, prefix, dtype, split):
  """What one decode step must read per chip: each weight shard once in the
  compute dtype, and the `prefix` cache positions of this chip's rows and
  kv heads (`split` as in `decode_step_args`)."""
  itemsize = jnp.dtype(dtype).itemsize
  weights = sum(
      math.prod(leaf.sharding.shard_shape(leaf.shape)) * itemsize
      for leaf in jax.tree.leaves(params)
  )
  row_split, kv_split = split
  kv = kv_bytes(cfg, rows, prefix, dtype) // (row_split * kv_split)
  return dict(weights_bytes=weights, kv_prefix_bytes=kv, min_bytes=weights + kv)


def compile_one(fn, args, chip) -> tuple[Optional[object], dict]:
  """(compiled, its roofline) of `fn(*args)`, or (None, {"error": one
  line}) where the TPU compiler refuses it, so that a plan still reports
  its other functions."""
  try:
    compiled = plan_compile.compile_for_tpu(fn, *args)
  except jax.errors.JaxRuntimeError as e:
    line = " ".join(str(e).split())
    return None, {"error": line[:300]}
  return compiled, roofline(plan_compile.compiled_cost(compiled), chip)


def decode_case(
    m,
    questions: int,
    group: int,
    prompt_len: int,
    new_tokens: int,
    kv_block: Optional[int],
):
  """The decode step of a plan's sampler at slot P + N / 2: (its arguments,
  graphdef first, for `decode_step`; its facts: `cache_slots`, `index` and
  the `min_bytes` fields).

  Args:
    m: the model on its mesh (`plan_compile.model_on_mesh`).
    questions: prompts per step (B); the rows are B x `group`.
    group: samples per prompt (G).
    prompt_len: P.
    new_tokens: N.
    kv_block: `SamplingConfig.kv_block`: the step's cache is its phase's
      (`layout.kv_phases`), the slots up to the first phase end after
      P + N / 2.
  """
  # The decode loop's parameters: the sampler casts them to the compute
  # dtype once per call, before the loop.
  loop_params = jax.eval_shape(
      lambda p: sampler_lib.in_compute_dtype(m.graphdef, p), m.params
  )
  loop_params = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s.sharding),
      loop_params,
      m.params,
  )
  rows, index = questions * group, prompt_len + new_tokens // 2
  phases = layout.kv_phases(prompt_len, new_tokens, kv_block)
  slots = next(end for end in phases if end > index)
  split = splits(m.cfg, m.shape, questions)
  args = (m.graphdef,) + decode_step_args(
      m.cfg, m.mesh, loop_params, rows, slots, m.dtype, split
  )
  facts = dict(
      cache_slots=slots,
      index=index,
      **min_bytes(m.cfg, m.params, rows, index, m.dtype, split),
  )
  return args, facts


def collective_facts(hlo: str, chip: plan_compile.Chip) -> dict:
  """A compiled decode step's collectives (`hlo_bytes.collectives`), their
  ops and bytes per chip in all, `ici_seconds` at half the chip's
  bidirectional ICI bandwidth and `hbm_seconds` of its HBM bytes."""
  found = hlo_bytes.collectives(hlo)
  nbytes = sum(c["bytes"] for c in found.values())
  hbm = hlo_bytes.hbm_bytes(hlo)
  ici = chip.ici_bytes_per_second / 2
  return dict(
      hbm_bytes=hbm,
      collectives=found,
      collective_ops=sum(c["ops"] for c in found.values()),
      collective_bytes=nbytes,
      ici_seconds=nbytes / ici if ici else None,
      hbm_seconds=hbm / chip.hbm_bytes_per_second,
  )
