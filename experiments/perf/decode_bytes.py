r"""Where the plan's decode step reads and writes its bytes, per HLO op.

  python -m experiments.perf.decode_bytes \
      --config=experiments/configs/grpo.py --topology=v5e-8 \
      --config.model=qwen2.5-0.5b --config.mesh.data=8 \
      --config.sampling.questions=8 --config.sampling.group_size=16 \
      --config.sampling.max_new_tokens=1024 --prompt_len=512 [--top=25]

The flags are `experiments.plan`'s (its committed v5e-8 row above).
Compiles ONLY that plan's decode step (`plan_roofline.decode_case`: one
token per row at slot P + N / 2, weights in the compute dtype, the
sampler's cache) for the topology, twice, and prints:

* XLA's `bytes accessed` of the program as compiled (the plan's
  `decode_step.bytes_accessed`), its `min_bytes` and their ratio;
* the same with memory-space assignment off (`xla_msa_enable=False`):
  XLA's TPU cost analysis counts every async copy between HBM and on-chip
  memory (VMEM) at each end and again where the op reads it, so a lone
  [16, 896] x [896, 4,864] bf16 matmul "accesses" 43.8 MB for its 8.7 MB
  weight as compiled, 8.9 MB with MSA off. With MSA off every operand and
  result lives in HBM, so that count is what the ops read and write there
  (an upper bound on the HBM traffic of the program that runs);
* for each, `experiments/hlo_bytes.py`'s count of the HBM bytes of that
  program (on-chip operands left out, each async copy counted at its HBM
  end only): the plan's `decode_step.hbm_bytes`;
* the breakdown of the MSA-off program by HLO op and by kind of op:
  per op, its operands and results, counting what a fusion reads of a
  parameter it only slices or gathers, and an in-place
  dynamic-update-slice as its update. This is this tool's estimate from
  `compiled.as_text()`, not XLA's per-op figure (which JAX does not
  expose); its total is printed beside XLA's.
"""

import collections
import functools
import types

from absl import app
from absl import flags

from experiments import hlo_bytes
from experiments import plan as plan_lib
from experiments import plan_compile
from experiments import plan_roofline
from ugrad import sampling
from ugrad.training import build

_TOP = flags.DEFINE_integer("top", 20, "single ops and kinds of op listed")
_KV_BLOCK = flags.DEFINE_integer(
    "kv_block",
    sampling.SamplingConfig.kv_block,
    "the sampler's `SamplingConfig.kv_block` (0: None, one phase)",
)


def report(hlo: str, xla_bytes: float, top: int) -> list[str]:
  """The breakdown as lines: kinds of op, then single ops."""
  rows = hlo_bytes.breakdown(hlo)
  total = sum(r[0] for r in rows)
  kinds = collections.Counter()
  counts = collections.Counter()
  for nbytes, _, kind in rows:
    kinds[kind] += nbytes
    counts[kind] += 1
  lines = [
      f"this tool's sum over the ops: {total / 1e9:.4f} GB "
      f"(XLA: {xla_bytes / 1e9:.4f} GB)",
      "",
      f"{'GB':>8} {'ops':>5}  kind of op (opcode, JAX op)",
  ]
  for kind, nbytes in kinds.most_common(top):
    lines.append(f"{nbytes / 1e9:8.4f} {counts[kind]:5d}  {kind[:100]}")
  lines += ["", f"{'MB':>8}  op"]
  for nbytes, name, kind in rows[:top]:
    lines.append(f"{nbytes / 1e6:8.2f}  {name}: {kind[:90]}")
  return lines


def compile_step(args, msa: bool):
  """The decode step compiled for the topology (MSA on or off)."""
  options = {} if msa else {"xla_msa_enable": False}
  return plan_compile.compile_for_tpu(
      plan_roofline.decode_step, *args, **options
  )


def main(argv, options: types.SimpleNamespace):
  del argv
  config = options.config.value
  if config is None:
    raise app.UsageError("--config is required")
  vocab = (
      options.vocab_size.value or build.make_task(config).tokenizer.vocab_size
  )
  m = plan_compile.model_on_mesh(config, options.topology.value, vocab)
  s = config.sampling
  args, facts = plan_roofline.decode_case(
      m,
      s.questions,
      s.group_size,
      options.prompt_len.value,
      s.max_new_tokens,
      _KV_BLOCK.value or None,
  )
  print(
      f"decode step of {config.model} on {options.topology.value}: slot "
      f"{facts['index']} of {facts['cache_slots']}, min_bytes "
      f"{facts['min_bytes'] / 1e9:.4f} GB per chip (weights "
      f"{facts['weights_bytes'] / 1e9:.4f} + KV prefix "
      f"{facts['kv_prefix_bytes'] / 1e9:.4f})"
  )
  for msa in (True, False):
    compiled = compile_step(args, msa)
    nbytes = plan_compile.compiled_cost(compiled)["bytes_accessed"]
    print(
        f"bytes_accessed, MSA {'on (as the plan compiles)' if msa else 'off'}"
        f": {nbytes / 1e9:.4f} GB = {nbytes / facts['min_bytes']:.2f}x "
        "min_bytes"
    )
    hbm = hlo_bytes.hbm_bytes(compiled.as_text())
    print(
        f"  this tool's HBM bytes of that program: {hbm / 1e9:.4f} GB = "
        f"{hbm / facts['min_bytes']:.2f}x min_bytes"
    )
  print(
      "\n".join(
          ["", "MSA off, by op:"]
          + report(compiled.as_text(), nbytes, _TOP.value)
      )
  )


if __name__ == "__main__":
  defined = plan_lib._define_flags()  # pylint: disable=protected-access
  app.run(functools.partial(main, options=defined))
