"""The Cloud TPU side of `experiments.plan`: chips, topologies, compiling.

The chips' HBM, peak bfloat16 FLOPs and HBM bandwidth (with sources), the
Cloud TPU names the plan accepts and their `jax.experimental.topologies`
names, the compile-only
devices of a topology (libtpu, its harmless messages on a machine without a
TPU filtered from stderr), the bytes one chip holds of a sharded tree of
ShapeDtypeStructs, and compiling one jitted function ahead of time for those
devices with its memory analysis and XLA's FLOPs and bytes.
"""

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
import types
from typing import Any, Optional

# Compiling for a topology never runs on a local TPU, so several processes
# (plans, perf scripts, tests) may load libtpu at once without its lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from flax import nnx
import jax

from experiments import plan_report
from ugrad import models
from ugrad.models import attention
from ugrad.models import layer_stack
from ugrad.models import lora
from ugrad.models import sharding as sharding_lib
from ugrad.training import build
from ugrad.training import lora_config

GiB = plan_report.GiB


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip's public figures.

  Attributes:
    hbm_bytes: HBM capacity per chip.
    peak_bf16_flops: dense bfloat16 FLOP/s per chip.
    hbm_bytes_per_second: HBM bandwidth per chip.
    source: the Cloud TPU documentation page the figures come from.
    ici_bytes_per_second: bidirectional inter-chip interconnect bandwidth
      per chip, as the page gives it (0: unknown).
  """

  hbm_bytes: int
  peak_bf16_flops: float
  hbm_bytes_per_second: float
  source: str
  ici_bytes_per_second: float = 0.0


# Per chip, from the "key chip specifications" table of each version's page
# (read 2025). HBM capacity: the pages say "16 GB" / "95 GB" / "32 GB"
# (GiB on some revisions of the v5e page); taken as GiB, matching what
# the compiler allows (15.75 GiB usable on v5e, see BUILD_NOTES.md). Bandwidth
# is decimal bytes per second as the pages give it ("819 GBps"; one revision
# of the v5e page writes "800 GiBps", about 859 GB/s: we keep 819e9).
CHIPS = {
    # "TPU v5e", https://cloud.google.com/tpu/docs/v5e: 197 TFLOPs bf16,
    # HBM2 16 GB, 819 GBps; bidirectional ICI 400 GBps per chip.
    "v5e": Chip(
        16 * GiB, 197e12, 819e9, "https://cloud.google.com/tpu/docs/v5e", 400e9
    ),
    # "TPU v5p", https://cloud.google.com/tpu/docs/v5p: 459 TFLOPs bf16,
    # HBM2e 95 GB, 2765 GBps; bidirectional ICI 1200 GBps per chip.
    "v5p": Chip(
        95 * GiB,
        459e12,
        2765e9,
        "https://cloud.google.com/tpu/docs/v5p",
        1200e9,
    ),
    # "TPU v6e" (Trillium), https://cloud.google.com/tpu/docs/v6e: 918
    # TFLOPs bf16, HBM 32 GB, 1638 GBps (1640 GBps on older revisions);
    # bidirectional ICI 800 GBps per chip.
    "v6e": Chip(
        32 * GiB, 918e12, 1638e9, "https://cloud.google.com/tpu/docs/v6e", 800e9
    ),
}

# Cloud TPU names -> (chip, jax topology name). Cloud counts TensorCores for
# v5p (two per chip: v5p-8 is 4 chips) and chips for v5e / v6e.
TOPOLOGIES = {
    "v5e-8": ("v5e", "v5e:2x4"),
    "v5p-8": ("v5p", "v5p:2x2x1"),
    "v5p-16": ("v5p", "v5p:2x2x2"),
    "v6e-8": ("v6e", "v6e:2x4"),
}

# libtpu's messages on a machine without a TPU; harmless for a plan.
_HARMLESS = re.compile(
    r"could not determine TPU accelerator type|unexpected worker hostname|"
    r"TPU_WORKER_HOSTNAMES|Failed to get TPU metadata|"
    r"WARNING: All log messages before absl::InitializeLog|"
    r"Logging before InitGoogle|Failed to find host bounds|"
    r"Source Location Trace|libtpu_init_utils|"
    r"Unable to initialize backend|Platform 'tpu' is experimental|"
    r"^\s*$"
)


def topology_name(cloud_name: str) -> tuple[str, str]:
  """(chip kind, jax topology name) of a Cloud TPU name.

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  if cloud_name not in TOPOLOGIES:
    raise ValueError(
        f"unknown TPU topology {cloud_name!r}; valid: "
        f"{', '.join(TOPOLOGIES)}"
    )
  return TOPOLOGIES[cloud_name]


@contextlib.contextmanager
def filtered_stderr():
  """Runs the block with the process's stderr (file descriptor 2, where
  libtpu logs) captured, then replays every line but libtpu's harmless
  ones."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      for line in tmp.read().decode(errors="replace").splitlines():
        if not _HARMLESS.search(line):
          print(line, file=sys.stderr)


def topology_devices(cloud_name: str) -> list:
  """The compile-only TPU devices of a Cloud topology (needs libtpu)."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  _, name = topology_name(cloud_name)
  with filtered_stderr():
    return list(
        topologies.get_topology_desc(topology_name=name, platform="tpu").devices
    )


def bytes_per_chip(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings
  (the largest shard of each leaf)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    # Bits: a QLoRA base's nf4 values are 4 bits each.
    total += math.prod(shard) * jax.dtypes.itemsize_bits(leaf.dtype) // 8
  return total


def abstract(tree, shardings):
  """`tree`'s leaves as ShapeDtypeStructs with the given shardings."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree,
      shardings,
  )


def memory_analysis(compiled) -> dict:
  """A compiled function's bytes per chip: arguments, outputs, temporaries,
  aliased, peak and generated code."""
  m = compiled.memory_analysis()
  fields = {
      "argument": "argument_size_in_bytes",
      "output": "output_size_in_bytes",
      "temp": "temp_size_in_bytes",
      "alias": "alias_size_in_bytes",
      "peak": "peak_memory_in_bytes",
      "code": "generated_code_size_in_bytes",
  }
  return {k: int(getattr(m, f, 0) or 0) for k, f in fields.items()}


def compiled_cost(compiled) -> dict:
  """XLA's cost analysis of a compiled function, per chip: "flops" and
  "bytes_accessed" (its "bytes accessed": HBM reads and writes of every
  op, a loop body counted once), each None where the analysis has none."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {}
  for name, key in (("flops", "flops"), ("bytes_accessed", "bytes accessed")):
    value = cost.get(key)
    out[name] = None if value is None else float(value)
  return out


def compiled_flops(compiled) -> Optional[float]:
  """XLA's FLOPs per chip of a compiled function (a loop body counted
  once); None where its cost analysis has none."""
  return compiled_cost(compiled)["flops"]


def compile_for_tpu(jitted, *args, **options) -> Any:
  """Lowers and compiles `jitted` for the arguments' (TPU) shardings, with
  libtpu's harmless messages filtered out; `options`: more XLA compiler
  options."""
  with filtered_stderr():
    lowered = jitted.lower(*args)
    return lowered.compile(
        compiler_options={"xla_tpu_no_crash_on_oom": True, **options}
    )


def model_on_mesh(
    config,
    cloud_topology: str,
    vocab_size: int,
    devices: Optional[list] = None,
    num_layers: int = 0,
) -> types.SimpleNamespace:
  """The config's model on a topology's mesh, abstract: chip (figures,
  kind, jax topology name), devices, mesh shape and `build.Mesh`, compute
  dtype, `ModelConfig`, graphdef, and the parameters as ShapeDtypeStructs
  (`abstract_params` unsharded, `params` with the mesh's shardings
  `param_sh`).

  Args: as `experiments.plan.plan`'s (`num_layers`: 0 keeps the
  preset's).
  """
  chip_kind, jax_name = topology_name(cloud_topology)
  chip = CHIPS[chip_kind]
  devices = topology_devices(cloud_topology) if devices is None else devices
  shape = sharding_lib.mesh_shape(config.mesh.to_dict(), len(devices))
  mesh = build.Mesh(sharding_lib.make_mesh(shape, devices))
  dtype = "bfloat16" if config.compute_dtype == "auto" else config.compute_dtype
  cfg = models.preset(
      config.model,
      vocab_size,
      dtype=dtype,
      param_dtype=config.param_dtype,
      # remat and attention "auto" as they resolve on the topology's chips,
      # not on this host.
      remat=layer_stack.remat_policy(config.remat, "tpu"),
      attention=attention.attention_kernel(config.attention, dtype, "tpu"),
      scan_layers=config.scan_layers,
      **({"num_layers": num_layers} if num_layers else {}),
  )
  sharding_lib.check_model(cfg, shape)

  spec = lora_config.lora_spec(config)  # Adapters and a frozen base (LoRA).
  abstract_model = nnx.eval_shape(
      lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))
      if spec is None
      else lora.attach(models.Transformer(cfg, rngs=nnx.Rngs(0)), spec, 0)
  )
  graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
  param_sh = mesh.params(abstract_params)
  params = abstract(abstract_params, param_sh)
  return types.SimpleNamespace(
      chip=chip,
      chip_kind=chip_kind,
      jax_name=jax_name,
      devices=devices,
      shape=shape,
      mesh=mesh,
      dtype=dtype,
      cfg=cfg,
      graphdef=graphdef,
      abstract_params=abstract_params,
      params=params,
      param_sh=param_sh,
  )
