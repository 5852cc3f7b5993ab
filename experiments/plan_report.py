"""What `experiments.plan` prints: the per-chip report, the MFU a step time
would mean, and the rows of the committed plan table (from its --json
results)."""

from typing import Optional

GiB = 2**30


def mfu(result: dict, step_time: float) -> float:
  """Model FLOPs utilisation of a step that takes `step_time` seconds."""
  return result["step"]["analytic_flops"] / (
      step_time * result["chips"] * result["peak_flops_per_chip"]
  )


def gb(x) -> str:
  return f"{x / 1e9:.2f} GB" if x >= 1e8 else f"{x / 1e6:.2f} MB"


def format_plan(r: dict, step_time: Optional[float] = None) -> str:
  mesh = (
      " x ".join(f"{a}={v}" for a, v in r["mesh"].items() if v > 1)
      or "1 device"
  )
  if r.get("reason"):
    return (
        f"{r['model']} on {r['topology']}, mesh {mesh}: DOES NOT FIT: "
        f"{r['reason']} (nothing compiled)"
    )
  lines = [
      "Compile-time estimates (XLA for TPU, compiled on CPU; not measured "
      "on hardware)",
      f"{r['model']} ({r['num_params'] / 1e9:.3f}e9 params, compute "
      f"{r['compute_dtype']}, remat={r['remat']}, micro_batches="
      f"{r['micro_batches']}) on {r['topology']} ({r['jax_topology']}, "
      f"{r['chips']} chips), mesh {mesh}",
      f"GRPO step: {r['questions']} questions x G={r['group_size']} = "
      f"{r['rows']} rows of {r['prompt_len']} + {r['max_new_tokens']} tokens",
      "",
      f"per chip (HBM {r['hbm_bytes_per_chip'] / GiB:.2f} GiB = "
      f"{gb(r['hbm_bytes_per_chip'])}):",
      f"  parameters ({r.get('param_dtype', 'float32')})"
      f"{' ' * max(1, 14 - len(r.get('param_dtype', 'float32')))}"
      f"{gb(r['params_bytes_per_chip'])}",
      *(
          [
              f"  LoRA adapters above (rank {r['lora_rank']}, "
              f"{r['adapter_params']:,} parameters); frozen base "
              f"({r['lora_base_dtype']}) "
              f"{gb(r['frozen_base_bytes_per_chip'])}, shared with the "
              "reference"
          ]
          if r.get("lora_rank")
          else []
      ),
      f"  optimizer state         {gb(r['opt_state_bytes_per_chip'])}",
      f"  reference parameters    {gb(r['reference_bytes_per_chip'])}",
      f"  gradients               {gb(r['grads_bytes_per_chip'])} "
      "(inside the update's temporaries)",
      f"  KV cache                {gb(r['kv_cache_bytes_per_chip'])} "
      f"({gb(r['kv_cache_bytes'])} in all)",
      "",
      f"  {'function':11s} {'argument':>10s} {'output':>10s} {'temp':>10s} "
      f"{'alias':>10s} {'peak':>10s} {'+resident':>10s} fits  "
      f"{'compiled FLOPs':>14s} {'analytic FLOPs':>14s} compile",
  ]
  for name, f in r["functions"].items():
    if "error" in f:
      lines.append(f"  {name:11s} FAILED TO COMPILE: {f['error']}")
      continue
    m = f["memory"]
    compiled = f["compiled_flops_per_chip"]
    lines.append(
        f"  {name:11s} "
        + " ".join(
            f"{gb(m[k]):>10s}"
            for k in ("argument", "output", "temp", "alias", "peak")
        )
        + f" {gb(f['peak_with_resident_state']):>10s} "
        f"{'yes ' if f['fits'] else 'NO  '} "
        f"{(compiled or 0):14.3e} {f['analytic_flops_per_chip']:14.3e} "
        f"{f.get('compile_seconds', 0):5.0f} s"
    )
  lines += [
      "  (FLOPs per chip per call; compiled FLOPs count a while-loop or scan "
      "body once: decoding, micro-batches, vocabulary chunks)",
      "",
      *roofline_lines(r),
      "",
      f"peak per chip {gb(r['peak_bytes_per_chip'])} of "
      f"{gb(r['hbm_bytes_per_chip'])}: "
      + (
          "fits"
          if r["fits"]
          else (
              "UNKNOWN: " + ", ".join(r["failed"]) + " failed to compile"
              if r.get("failed")
              else "DOES NOT FIT"
          )
      ),
      f"analytic FLOPs per step: {r['step']['analytic_flops']:.3e} "
      f"(sample + {r['step']['forward_passes']} log-prob forward(s) + "
      "update)",
  ]
  if step_time:
    lines.append(
        f"a {step_time:g} s step would be MFU "
        f"{100 * mfu(r, step_time):.1f}% (bf16 peak "
        f"{r['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s per chip)"
    )
  return "\n".join(lines)


def roofline_lines(r: dict) -> list:
  """The roofline per function and chip, and the decode step's bytes
  against what it must read."""
  bandwidth = r.get("hbm_bytes_per_second")
  if not bandwidth:
    return []
  lines = [
      f"roofline per chip ({r['chip']}: {r['peak_flops_per_chip'] / 1e12:.0f}"
      f" TFLOP/s bf16, {bandwidth / 1e9:.0f} GB/s HBM; "
      f"{r.get('chip_source', '')}):",
      f"  {'function':11s} {'FLOPs':>10s} {'bytes':>10s} {'roofline':>10s} "
      f"{'bound':>7s} {'MFU':>6s}",
  ]
  for name, f in r["functions"].items():
    roof = f.get("roofline") or {}
    if "roofline_seconds" not in roof:
      continue
    lines.append(
        f"  {name:11s} {roof['flops']:10.3e} {gb(roof['bytes_accessed']):>10s}"
        f" {1e3 * roof['roofline_seconds']:8.3f} ms {roof['bound']:>7s} "
        f"{100 * roof['mfu']:5.1f}%"
    )
  lines.append(
      "  (roofline = max(FLOPs / peak, bytes / HBM bandwidth) of the "
      "compiled program; MFU = its FLOPs / (peak x roofline): the share of "
      "peak it would use at its roofline, an upper bound; loop bodies once)"
  )
  step = r["functions"].get("decode_step", {})
  if "min_bytes" in step:
    lines.append(
        f"decode step at slot {step['index']} of {step['cache_slots']}: "
        f"reads {gb(step['bytes_accessed'])} per chip, "
        f"{step['bytes_over_min']:.2f}x the {gb(step['min_bytes'])} it must "
        f"(weights in {r['compute_dtype']} {gb(step['weights_bytes'])} + "
        f"KV prefix {gb(step['kv_prefix_bytes'])}); of HBM, "
        f"{gb(step['hbm_bytes'])} = {step['hbm_bytes_over_min']:.2f}x "
        "(experiments/hlo_bytes.py: on-chip operands left out, async copies "
        "counted once)"
    )
  if step.get("ici_seconds") is not None:
    lines.append(
        f"  its {step['collective_ops']} collectives: "
        f"{gb(step['collective_bytes'])} in per chip, "
        f"{1e3 * step['ici_seconds']:.2f} ms over ICI against "
        f"{1e3 * step['hbm_seconds']:.2f} ms of HBM bytes (latency not "
        "counted)"
    )
  return lines


def table_row(r: dict) -> str:
  """One markdown row of the committed plan table."""
  mesh = ", ".join(f"{a}={v}" for a, v in r["mesh"].items() if v > 1)
  gb = lambda x: f"{x / 1e9:.1f}"
  peaks = " / ".join(
      gb(r["functions"][f]["peak_with_resident_state"])
      if "peak_with_resident_state" in r["functions"].get(f, {})
      else "-"
      for f in ("sample", "logprobs", "update")
  )
  verdict = (
      f"yes, {gb(r['peak_bytes_per_chip'])} of "
      f"{gb(r['hbm_bytes_per_chip'])} GB"
      if r["fits"]
      else r.get("reason")
      or (r.get("failed") and "failed to compile: " + ", ".join(r["failed"]))
      or f"NO: {gb(r['peak_bytes_per_chip'])} of "
      f"{gb(r['hbm_bytes_per_chip'])} GB"
  )
  dtype = r.get("param_dtype", "float32")
  model = r["model"]
  if r.get("lora_rank"):  # The frozen base's GB per chip in the model cell.
    model += (
        f" LoRA r={r['lora_rank']}, {r['lora_base_dtype']} base "
        f"{gb(r['frozen_base_bytes_per_chip'])}"
    )
  return (
      f"| {model} | {r['topology']} ({r['chips']}) | {mesh} | "
      f"{r.get('attention', 'einsum')}, {r['remat']}, {r['micro_batches']}"
      f"{', scan' if r.get('scan_layers') else ''}"
      f"{'' if dtype == 'float32' else ', ' + dtype + ' params'} | "
      f"{gb(r['params_bytes_per_chip'])} / "
      f"{gb(r['opt_state_bytes_per_chip'])} / "
      f"{gb(r['reference_bytes_per_chip'])} | {peaks} | {verdict} |"
  )


TABLE_HEADER = (
    "| model | topology (chips) | mesh | attention, remat, micro-batches |"
    " params / opt /"
    " ref per chip, GB | peak +resident, GB: sample / log-probs / update |"
    " fits? |\n|---|---|---|---|---|---|---|"
)
