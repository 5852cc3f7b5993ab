"""Bytes a compiled XLA program's top-level ops read and write, from its
HLO text (`compiled.as_text()`): XLA's cost analysis gives one total and,
on a TPU, counts an async copy between HBM and on-chip memory (VMEM) at
both ends and again where an op reads it; this module counts per op, and
can count only what lives in HBM (the layout's memory space says where an
operand or result is: S(1) and above is on chip).

This is an estimate from the text, not XLA's per-op figure (which JAX does
not expose): a fusion that only slices or gathers a parameter counts what
it takes, an in-place dynamic-update-slice counts its update.
"""

import collections
import dataclasses
import re

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


def _size(type_text: str, hbm_only: bool) -> int:
  """Bytes of the arrays of an HLO type (those in HBM only, if asked)."""
  return sum(
      b for b, on_chip in _arrays(type_text) if not (hbm_only and on_chip)
  )


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


def _fusion_bytes(op: Op, fused: list[Op], types_of: dict, hbm: bool) -> int:
  """A fusion's reads and writes: a parameter used only by slices or
  gathers counts what they take; an in-place dynamic-update-slice at the
  root counts its update (read and written), not its whole buffer. With
  `hbm`, only what lives in HBM (what its operand or result's layout puts
  there) counts."""
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
    base = types_of.get(op.operands[index[in_place]], "") if hbm else ""
    out = (
        0
        if hbm and not _size(base, True)
        else 2 * _size(by_name[root.operands[1]].type, False)
    )
  else:
    out = _size(op.type, hbm)
  total = out
  for pname in index:
    arg = op.operands[index[pname]] if index[pname] < len(op.operands) else ""
    full = _size(types_of.get(arg, ""), hbm)
    uses = users[pname]
    if pname == in_place or not full:
      continue
    if uses and all(u.opcode in _SLICING and i == 0 for u, i in uses):
      total += sum(_size(u.type, False) for u, _ in uses)
    else:
      total += full
  return total


def op_bytes(op: Op, comps: dict, types_of: dict, hbm: bool = False) -> int:
  """Bytes one top-level op reads and writes (this tool's estimate); with
  `hbm`, only those of HBM: on-chip (VMEM) operands and results are left
  out, and an async copy counts its HBM end once (a prefetch's read, an
  eviction's write), not both ends."""
  if op.opcode in _FREE or op.opcode.endswith("-done"):
    return 0
  if op.opcode.endswith("-start"):  # Async copy: one read, one write.
    moved = _arrays(op.type)
    echo = sum(len(_arrays(types_of.get(x, ""))) for x in op.operands)
    if not hbm:
      return 2 * (moved[echo][0] if len(moved) > echo else 0)
    if len(moved) <= echo:
      return 0
    # What moves is the result (a slice-start moves only its slice), read
    # from the operand's memory and written to the result's.
    size, to_chip = moved[echo]
    from_chip = all(c for _, c in _arrays(types_of.get(op.operands[0], "")))
    return size * ((not from_chip) + (not to_chip))
  if op.opcode == "dynamic-update-slice":  # In place.
    if hbm and not _size(types_of.get(op.operands[0], ""), True):
      return 0
    return 2 * _size(types_of.get(op.operands[1], ""), False)
  if op.opcode == "fusion" and op.calls in comps:
    return _fusion_bytes(op, comps[op.calls], types_of, hbm)
  ins = sum(_size(types_of.get(x, ""), hbm) for x in op.operands)
  return ins + _size(op.type, hbm)


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


def breakdown(hlo: str, hbm: bool = False) -> list[tuple[int, str, str]]:
  """(bytes, op, kind) of every op of the entry computation, largest
  first (HBM bytes only, with `hbm`)."""
  comps = parse(hlo)
  types_of = {o.name: o.type for ops in comps.values() for o in ops}
  entry = comps.get("ENTRY", [])
  inputs = {
      o.name: _argument_name(o.op_name)
      for o in entry
      if o.opcode == "parameter"
  }
  rows = [
      (op_bytes(op, comps, types_of, hbm), op.name, _kind(op, inputs))
      for op in entry
  ]
  return sorted((r for r in rows if r[0]), reverse=True)


def hbm_bytes(hlo: str) -> int:
  """This tool's count of the HBM bytes a compiled program's entry ops
  read and write (on-chip operands left out, async copies once)."""
  return sum(r[0] for r in breakdown(hlo, hbm=True))


# Collectives and the share of their bytes a chip receives in a group of n
# chips (ring algorithms): an all-gather the (n - 1) / n of its result it
# did not have, a reduce-scatter (n - 1) / n of its operand, an all-reduce
# (a reduce-scatter and an all-gather) twice that, an all-to-all
# (n - 1) / n, a collective-permute all of it.
_SHARE = {
    "all-gather": lambda n: (n - 1) / n,
    "reduce-scatter": lambda n: (n - 1) / n,
    "all-to-all": lambda n: (n - 1) / n,
    "all-reduce": lambda n: 2 * (n - 1) / n,
    "collective-permute": lambda n: 1.0,
}
_GROUPS = re.compile(r"replica_groups=(\{\{[0-9,]*\}|\[[0-9,]+\]<=)")
# The mesh form: mesh['axis_0'=4,'axis_1'=2] {'axis_1'}: groups over the
# axes in braces.
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}")
_PARTITIONS = re.compile(r"num_partitions=([0-9]+)")


def _group_size(line: str, partitions: int) -> int:
  """The chips of a collective's replica groups: {{0,1,2,3},...}, the iota
  form [groups,size]<=[...] or the mesh form; every chip where the text
  gives none."""
  m = _MESH_GROUPS.search(line)
  if m:
    sizes = dict(re.findall(r"'(\w+)'=([0-9]+)", m.group(1)))
    n = 1
    for axis in re.findall(r"'(\w+)'", m.group(2)):
      n *= int(sizes[axis])
    return n
  m = _GROUPS.search(line)
  if m is None:
    return partitions
  text = m.group(1)
  if text.startswith("{{"):
    return len(text[2:-1].split(","))
  return int(text[1:-3].split(",")[-1])


def collectives(hlo: str) -> dict[str, dict]:
  """{collective: {"ops": how many, "bytes": what one chip receives}} over
  every computation of a compiled module's text (`compiled.as_text()`),
  each op once: one inside a loop body counts for one trip. An async pair
  counts at its start."""
  header = _PARTITIONS.search(hlo)
  partitions = int(header.group(1)) if header else 1
  out = {}
  for line in hlo.splitlines():
    m = _INSTRUCTION.match(line)
    if m is None or m.group(4).endswith("-done"):
      continue
    opcode = m.group(4).removesuffix("-start")
    if opcode not in _SHARE:
      continue
    n = _group_size(line, partitions)
    size = max((b for b, _ in _arrays(m.group(3))), default=0)
    if opcode == "reduce-scatter":
      size *= n  # Its result is a 1 / n share of what it reduces.
    entry = out.setdefault(opcode, {"ops": 0, "bytes": 0})
    entry["ops"] += 1
    entry["bytes"] += int(size * _SHARE[opcode](n)) if n > 1 else 0
  return out
