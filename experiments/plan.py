r"""Memory and FLOPs plan of a GRPO run on a Cloud TPU topology, without a TPU.

  python -m experiments.plan --config=experiments/configs/grpo.py \
      --topology=v5p-16 --config.model=qwen2.5-7b --config.remat=full \
      --config.mesh.data=1 --config.mesh.fsdp=8 \
      --config.sampling.questions=4 --config.sampling.group_size=16 \
      --config.sampling.max_new_tokens=1024 --prompt_len=512 [--json] \
      [--step_time=60]

Compiles ahead of time, on this machine's CPU, the jitted functions of one
GRPO step for the topology's TPU devices (`jax.experimental.topologies`;
needs libtpu: `pip install -e '.[plan]'`): the sampler (prefill and decode
loop with its KV cache), the log-prob forward (reference / old log-probs)
and the update (loss, gradient over `micro_batches`, AdamW). Nothing is
allocated: parameters, optimizer state and batch are ShapeDtypeStructs with
the run's shardings. Each function's `memory_analysis()` gives its arguments,
outputs, temporaries and peak per chip; the plan adds the state that stays
resident while it runs (the policy, its optimizer state and the frozen
reference) and compares the result with the chip's HBM.

These are the compiler's estimates, not measurements on hardware. FLOPs:
`cost_analysis()` counts a scanned or while-loop body once (the decode loop,
the micro-batch scan, the chunked vocabulary projection), so the plan also
gives analytic FLOPs (2 N per token forward, 6 N per token for the update,
N the parameters that multiply, plus attention over the full T x T or cache
scores the code computes), and with `--step_time` the MFU that time would
mean. Each function's roofline per chip (XLA's FLOPs and bytes accessed
against the chip's peak and HBM bandwidth) and one decode step compiled
alone at slot P + N / 2, its bytes against the weights and KV prefix it
must read, are `experiments.plan_roofline`'s. A function the TPU compiler
refuses is reported in one line (`failed`); the others still are.
"""

import functools
import glob
import json
import math
import os
import time
import types
from typing import Optional

# The plan compiles for a topology's devices; it never runs on a local TPU
# (libtpu's lockfile: plan_compile).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from experiments import plan_compile
from experiments import plan_lora
from experiments import plan_report
from experiments import plan_roofline
from ugrad.training import build
from ugrad.training import lora_config
from ugrad import coefficients
from ugrad import rollout as rollout_lib
from ugrad import sampling
from ugrad.sampling import sampler as sampler_lib
from ugrad.training import update as update_lib
from ugrad.models import model_config


def _rollout(rows: int, length: int, needed: set, sharding):
  """The abstract update batch: a GRPO rollout of `rows` x `length`."""

  def seq(dtype):
    return jax.ShapeDtypeStruct((rows, length), dtype, sharding=sharding)

  def row(dtype):
    return jax.ShapeDtypeStruct((rows,), dtype, sharding=sharding)

  fields = dict(
      tokens=seq(jnp.int32),
      completion_mask=seq(jnp.int32),
      attention_mask=seq(jnp.int32),
      logp_old=seq(jnp.float32),
      group_ids=row(jnp.int32),
      rewards=row(jnp.float32),
  )
  per_token = {
      "logp_ref": jnp.float32,
      "step_rewards": jnp.float32,
      "step_mask": jnp.int32,
      "values": jnp.float32,
  }
  per_row = {"pair_ids": jnp.int32, "pair_sign": jnp.float32}
  for name in needed:
    if name in per_token:
      fields[name] = seq(per_token[name])
    elif name in per_row:
      fields[name] = row(per_row[name])
  return rollout_lib.Rollout(**fields)


def analytic_flops(
    cfg,
    params: int,
    *,
    questions: int,
    group: int,
    prompt_len: int,
    new_tokens: int,
) -> dict:
  """Model FLOPs of one call of each function (whole slice, no remat).

  N counts the parameters that multiply: all but the input embedding table
  (a lookup), with the output projection (the tied embedding or lm_head).
  Attention counts the full score matrices the code computes (masked, not
  skipped): 4 L H Dh per query per key slot forward.
  """
  vd = cfg.vocab_size * cfg.hidden_size
  n = model_config.matmul_params(cfg, params)
  att = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim
  rows, t = questions * group, prompt_len + new_tokens
  forward = model_config.forward_flops(cfg, n, rows, t)
  update = 3 * forward
  prefill = (
      questions * (2 * (n - vd) * prompt_len + att * prompt_len * t)
      + questions * 2 * vd
  )
  decode_step = rows * (2 * n + att * t)
  return {
      "matmul_params": n,
      "sample": prefill + new_tokens * decode_step,
      "decode_step": decode_step,
      "logprobs": forward,
      "update": update,
  }


def plan(
    config,
    cloud_topology: str,
    prompt_len: int,
    vocab_size: int,
    devices: Optional[list] = None,
    num_layers: int = 0,
) -> dict:
  """Compiles the step's functions for a topology; the plan as a dict.

  Args:
    config: an experiment config (GRPO: an online sampling source).
    cloud_topology: a key of `plan_compile.TOPOLOGIES`.
    prompt_len: P.
    vocab_size: the tokenizer's vocabulary (see `models.preset`).
    devices: the topology's devices (default:
        `plan_compile.topology_devices`).
  """
  m = plan_compile.model_on_mesh(
      config, cloud_topology, vocab_size, devices, num_layers
  )
  chip, chip_kind, jax_name, devices = (
      m.chip,
      m.chip_kind,
      m.jax_name,
      m.devices,
  )
  shape, mesh, dtype, cfg = m.shape, m.mesh, m.dtype, m.cfg
  graphdef, abstract_params, params = m.graphdef, m.abstract_params, m.params
  num_params = plan_lora.count_params(abstract_params)
  # Under LoRA the adapters train and the base is a frozen argument.
  spec = lora_config.lora_spec(config)
  part = plan_lora.parts(m, spec)

  optimizer, abstract_opt, opt_sh = plan_lora.optimizer_state(
      config, part, mesh.replicated
  )
  opt_state = plan_compile.abstract(abstract_opt, opt_sh)

  questions = config.sampling.questions
  group = config.sampling.group_size
  new_tokens = config.sampling.max_new_tokens
  rows, length = questions * group, prompt_len + new_tokens
  needed = build.needed_fields(config)
  batch = _rollout(rows, length, needed, mesh.batch)
  hp = build.coef_hparams(config)
  coef_fn = coefficients.make_coefficient(config.coef.name, **hp)
  temperature = build.train_temperature(config)
  loss_fn = update_lib.policy_loss(
      graphdef, coef_fn, build.normalizer(config), new_tokens, temperature
  )
  update = update_lib.make_update(
      loss_fn,
      optimizer,
      config.micro_batches,
      (part.shardings, opt_sh, mesh.replicated),
      frozen=part.frozen,
  )
  update_args = (part.params, opt_state, batch)
  if part.frozen is not None:  # The jitted update, the base its argument.
    update, update_args = update.func, update_args + (part.frozen,)

  prompt_sh = sampling.prompt_sharding(mesh.mesh, questions)
  prompts = jax.ShapeDtypeStruct(
      (questions, prompt_len), jnp.int32, sharding=prompt_sh
  )
  key = jax.ShapeDtypeStruct(
      (), jax.eval_shape(jax.random.key, 0).dtype, sharding=mesh.replicated
  )
  sampling_config = sampling.SamplingConfig(
      max_new_tokens=new_tokens,
      eos_id=0,
      num_samples=group,
      temperature=config.sampling.temperature,
      top_k=config.sampling.top_k or None,
      top_p=(config.sampling.top_p if config.sampling.top_p < 1 else None),
  )

  # Trained parameters (the adapters under LoRA) and the frozen base.
  params_bytes = plan_compile.bytes_per_chip(part.params)
  base_bytes = part.frozen_bytes
  opt_bytes = plan_compile.bytes_per_chip(opt_state)
  # The frozen reference (initial parameters) stays on the device beside
  # the policy when the coefficient needs logp_ref or the reference resets;
  # under LoRA it is the initial adapters over the shared base.
  reference = ("logp_ref" in needed) or bool(build.ref_reset_period(config))
  ref_bytes = params_bytes if reference else 0
  resident = params_bytes + base_bytes + opt_bytes + ref_bytes
  chips = len(devices)
  out = dict(
      topology=cloud_topology,
      jax_topology=jax_name,
      chip=chip_kind,
      chips=chips,
      mesh=shape,
      model=config.model,
      num_layers=cfg.num_layers,
      num_params=num_params,
      compute_dtype=dtype,
      param_dtype=config.param_dtype,
      remat=cfg.remat,
      attention=cfg.attention,
      scan_layers=cfg.scan_layers,
      micro_batches=config.micro_batches,
      questions=questions,
      group_size=group,
      prompt_len=prompt_len,
      max_new_tokens=new_tokens,
      rows=questions * group,
      hbm_bytes_per_chip=chip.hbm_bytes,
      params_bytes_per_chip=params_bytes,
      opt_state_bytes_per_chip=opt_bytes,
      reference_bytes_per_chip=ref_bytes,
      grads_bytes_per_chip=params_bytes,
      peak_flops_per_chip=chip.peak_bf16_flops,
      **plan_lora.facts(spec, m, base_bytes),
  )
  if resident + params_bytes > chip.hbm_bytes:
    # The update holds the gradients beside the resident state: this mesh
    # cannot fit, whatever the compiler does with the rest; no compile.
    out.update(
        functions={},
        peak_bytes_per_chip=resident + params_bytes,
        fits=False,
        reason=(
            f"parameters, optimizer state, reference and gradients "
            "alone are "
            f"{plan_report.gb(resident + params_bytes)} per chip on "
            "this mesh, over the "
            f"{plan_report.gb(chip.hbm_bytes)} of HBM"
        ),
    )
    return out

  split = plan_roofline.splits(cfg, shape, questions)
  decode_args, decode_facts = plan_roofline.decode_case(
      m, questions, group, prompt_len, new_tokens, sampling_config.kv_block
  )
  functions = {
      "sample": (
          sampler_lib._sample_jit,  # pylint: disable=protected-access
          (graphdef, params, prompts, prompts, key, sampling_config),
          params_bytes + base_bytes,
      ),
      "logprobs": (
          update_lib.policy_logprobs,
          (graphdef, params, batch.tokens, batch.attention_mask, temperature),
          params_bytes + base_bytes,
      ),
      "update": (update, update_args, params_bytes + opt_bytes + base_bytes),
      # One decode step alone at the middle of generation (cache prefix
      # P + N / 2 of the sampler's P + N slots): its bytes against what it
      # must read.
      "decode_step": (
          plan_roofline.decode_step,
          decode_args,
          params_bytes + base_bytes,
      ),
  }
  analytic = analytic_flops(
      cfg,
      num_params,
      questions=questions,
      group=group,
      prompt_len=prompt_len,
      new_tokens=new_tokens,
  )
  results = {}
  for name, (fn, args, resident_args) in functions.items():
    start = time.perf_counter()
    with jax.set_mesh(mesh.mesh):  # As the trainer runs its steps.
      compiled, roofline = plan_roofline.compile_one(fn, args, chip)
    seconds = time.perf_counter() - start
    logging.info("compiled %s in %.0f s", name, seconds)
    if compiled is None:
      results[name] = dict(roofline, compile_seconds=round(seconds, 1))
      continue
    memory = plan_compile.memory_analysis(compiled)
    # What else stays on the chip meanwhile: resident state that is not
    # among this function's arguments.
    with_resident = memory["peak"] + resident - resident_args
    if name == "decode_step":  # XLA counts MSA prefetches more than once.
      decode_facts.update(
          plan_roofline.collective_facts(compiled.as_text(), chip)
      )
    results[name] = dict(
        memory=memory,
        peak_with_resident_state=with_resident,
        compile_seconds=round(seconds, 1),
        fits=with_resident <= chip.hbm_bytes,
        compiled_flops_per_chip=roofline["flops"],
        analytic_flops_per_chip=analytic[name] / chips,
        roofline=roofline,
    )
  step = results["decode_step"]
  if "roofline" in step:
    step.update(
        bytes_accessed=step["roofline"]["bytes_accessed"], **decode_facts
    )
    step["bytes_over_min"] = step["bytes_accessed"] / step["min_bytes"]
    step["hbm_bytes_over_min"] = step["hbm_bytes"] / step["min_bytes"]

  kv_cache = plan_roofline.kv_bytes(cfg, rows, length, dtype)
  forward_passes = int("logp_ref" in needed) + int(config.recompute_logp_old)
  step_flops = (
      analytic["sample"]
      + forward_passes * analytic["logprobs"]
      + config.ppo_epochs * analytic["update"]
  )
  compiled = [r for r in results.values() if "memory" in r]
  peak = max((r["peak_with_resident_state"] for r in compiled), default=0)
  failed = {k: r["error"] for k, r in results.items() if "error" in r}
  out.update(
      matmul_params=analytic["matmul_params"],
      kv_cache_bytes=kv_cache,
      kv_cache_bytes_per_chip=kv_cache // math.prod(split),
      functions=results,
      peak_bytes_per_chip=peak,
      fits=peak <= chip.hbm_bytes and not failed,
      failed=failed,
      hbm_bytes_per_second=chip.hbm_bytes_per_second,
      chip_source=chip.source,
      step=dict(
          forward_passes=forward_passes,
          analytic_flops=step_flops,
          analytic_flops_per_chip=step_flops / chips,
      ),
  )
  return out


def _define_flags() -> types.SimpleNamespace:
  """The command line's flags (holders), defined when this module runs as
  the program, not at import, so that tests can import it beside
  experiments.main (which defines --config too)."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          "config", None, "Path to an experiment config file.", lock_config=True
      ),
      topology=flags.DEFINE_string(
          "topology", "v5p-16", "Cloud TPU name (v5e-8, v5p-8, v5p-16, v6e-8)"
      ),
      json=flags.DEFINE_bool("json", False, "print one JSON object"),
      step_time=flags.DEFINE_float(
          "step_time", None, "seconds per GRPO step, for the MFU it would mean"
      ),
      prompt_len=flags.DEFINE_integer("prompt_len", 512, "P, prompt tokens"),
      vocab_size=flags.DEFINE_integer(
          "vocab_size",
          0,
          "the tokenizer's vocabulary (0: the config's task's); "
          "published-model presets keep their own",
      ),
      num_layers=flags.DEFINE_integer(
          "num_layers",
          0,
          "decoder layers (0: the preset's); fewer show how memory grows "
          "with depth in a fraction of the compile time",
      ),
      table=flags.DEFINE_string(
          "table",
          None,
          "print the markdown table of the --json outputs (*.json)"
          " in this directory",
      ),
  )


def main(argv, options: types.SimpleNamespace):
  del argv
  if options.table.value:
    print(plan_report.TABLE_HEADER)
    for path in sorted(glob.glob(os.path.join(options.table.value, "*.json"))):
      with open(path, encoding="utf-8") as f:
        print(plan_report.table_row(json.load(f)))
    return
  if options.config.value is None:
    raise app.UsageError("--config is required (or --table DIR)")
  config = options.config.value
  vocab = (
      options.vocab_size.value or build.make_task(config).tokenizer.vocab_size
  )
  result = plan(
      config,
      options.topology.value,
      options.prompt_len.value,
      vocab,
      num_layers=options.num_layers.value,
  )
  step_time = options.step_time.value
  if step_time:
    result["step_time"] = step_time
    result["mfu"] = plan_report.mfu(result, step_time)
  if options.json.value:
    print(json.dumps(result))
  else:
    print(plan_report.format_plan(result, step_time))


if __name__ == "__main__":
  app.run(functools.partial(main, options=_define_flags()))
