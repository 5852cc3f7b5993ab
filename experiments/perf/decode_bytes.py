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
* the breakdown of the MSA-off program by HLO op and by kind of op:
  per op, its operands and results, counting what a fusion reads of a
  parameter it only slices or gathers, and an in-place
  dynamic-update-slice as its update. This is this tool's estimate from
  `compiled.as_text()`, not XLA's per-op figure (which JAX does not
  expose); its total is printed beside XLA's.
"""

import collections
import dataclasses
import functools
import re
import types

from absl import app
from absl import flags

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

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2}
_ITEMSIZE.update({"u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8})
_ITEMSIZE.update({"s64": 8, "u64": 8})
_ARRAY = re.compile(
    r"\b(pred|[su](?:8|16|32|64)|bf16|f(?:16|32|64))\[([0-9,]*)\]"
    r"(\{[^}]*\})?"
)
_COMPUTATION = re.compile(r"^(ENTRY )?%(\S+) \(.*\{$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%(\S+) = (.+?) ([a-z][\w-]*)\((.*)$")
# Ops that move no data of their own.
_FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "bitcast",
    "tuple",
    "after-all",
    "partition-id",
    "replica-id",
}
_SLICING = {"dynamic-slice", "slice", "gather"}


@dataclasses.dataclass
class Op:
  name: str
  type: str
  opcode: str
  operands: list
  root: bool
  calls: str
  op_name: str


def _arrays(type_text: str) -> list[tuple[int, bool]]:
  """(bytes, on chip) of each array in an HLO type (on chip: a layout in
  memory space S(1) or above, VMEM on a TPU)."""
  out = []
  for dtype, dims, layout in _ARRAY.findall(type_text):
    n = _ITEMSIZE[dtype]
    for d in filter(None, dims.split(",")):
      n *= int(d)
    out.append((n, bool(re.search(r"S\([1-9]\)", layout or ""))))
  return out


def parse(hlo: str) -> dict[str, list[Op]]:
  """The computations of an HLO module's text: name -> its ops ("ENTRY"
  for the entry computation)."""
  comps, current = {}, None
  for line in hlo.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      current = comps.setdefault("ENTRY" if m.group(1) else m.group(2), [])
      continue
    m = _INSTRUCTION.match(line)
    if m is None or current is None:
      continue
    root, name, type_text, opcode, rest = m.groups()
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    current.append(
        Op(
            name,
            type_text,
            opcode,
            operands,
            bool(root),
            calls.group(1) if calls else "",
            op_name.group(1) if op_name else "",
        )
    )
  return comps


def _fusion_bytes(op: Op, fused: list[Op], types_of: dict) -> int:
  """A fusion's reads and writes: a parameter used only by slices or
  gathers counts what they take; an in-place dynamic-update-slice at the
  root counts its update (read and written), not its whole buffer."""
  index = {}
  for o in fused:
    if o.opcode == "parameter":
      index[o.name] = len(index)
  by_name = {o.name: o for o in fused}
  users = collections.defaultdict(list)
  for o in fused:
    for i, x in enumerate(o.operands):
      users[x].append((o, i))
  root = next(o for o in fused if o.root)
  in_place = None
  if root.opcode == "dynamic-update-slice":
    in_place = root.operands[0]
    out = 2 * sum(b for b, _ in _arrays(by_name[root.operands[1]].type))
  else:
    out = sum(b for b, _ in _arrays(op.type))
  total = out
  for pname in index:
    arg = op.operands[index[pname]] if index[pname] < len(op.operands) else ""
    full = sum(b for b, _ in _arrays(types_of.get(arg, "")))
    uses = users[pname]
    if pname == in_place:
      continue
    if uses and all(u.opcode in _SLICING and i == 0 for u, i in uses):
      total += sum(sum(b for b, _ in _arrays(u.type)) for u, _ in uses)
    else:
      total += full
  return total


def op_bytes(op: Op, comps: dict, types_of: dict) -> int:
  """Bytes one top-level op reads and writes (this tool's estimate)."""
  if op.opcode in _FREE or op.opcode.endswith("-done"):
    return 0
  if op.opcode.endswith("-start"):  # Async copy: one read, one write.
    moved = _arrays(op.type)
    echo = sum(len(_arrays(types_of.get(x, ""))) for x in op.operands)
    return 2 * (moved[echo][0] if len(moved) > echo else 0)
  if op.opcode == "dynamic-update-slice":  # In place.
    return 2 * sum(b for b, _ in _arrays(types_of.get(op.operands[1], "")))
  if op.opcode == "fusion" and op.calls in comps:
    return _fusion_bytes(op, comps[op.calls], types_of)
  ins = sum(b for x in op.operands for b, _ in _arrays(types_of.get(x, "")))
  return ins + sum(b for b, _ in _arrays(op.type))


def _kind(op: Op, inputs: dict) -> str:
  """What an op computes and the arguments it reads (`inputs`: parameter
  op -> its name), the same for every layer."""
  what = re.sub(r"^jit\([^)]*\)/", "", op.op_name)
  reads = sorted({inputs[x] for x in op.operands if x in inputs})
  text = f"{op.opcode} {what}" + (f" <- {', '.join(reads)}" if reads else "")
  return re.sub(r"[0-9]+", "N", text)


def _argument_name(op_name: str) -> str:
  """params['layers'][0]['mlp']['up_proj']['kernel'].value -> mlp.up_proj"""
  keys = re.findall(r"\['(\w+)'\]", op_name.replace("\\", ""))
  keys = [k for k in keys if k not in ("layers", "kernel", "value")]
  return ".".join(keys) or op_name


def breakdown(hlo: str) -> list[tuple[int, str, str]]:
  """(bytes, op, kind) of every op of the entry computation, largest
  first."""
  comps = parse(hlo)
  types_of = {o.name: o.type for ops in comps.values() for o in ops}
  entry = comps.get("ENTRY", [])
  inputs = {
      o.name: _argument_name(o.op_name)
      for o in entry
      if o.opcode == "parameter"
  }
  rows = [
      (op_bytes(op, comps, types_of), op.name, _kind(op, inputs))
      for op in entry
  ]
  return sorted((r for r in rows if r[0]), reverse=True)


def report(hlo: str, xla_bytes: float, top: int) -> list[str]:
  """The breakdown as lines: kinds of op, then single ops."""
  rows = breakdown(hlo)
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
  print(
      "\n".join(
          ["", "MSA off, by op:"]
          + report(compiled.as_text(), nbytes, _TOP.value)
      )
  )


if __name__ == "__main__":
  defined = plan_lib._define_flags()  # pylint: disable=protected-access
  app.run(functools.partial(main, options=defined))
