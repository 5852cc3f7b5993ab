"""Accelerator figures: training MFU and decode bandwidth of a real shape.

  python -m experiments.perf.benchmark --accelerator

prints one JSON line per figure, for the `--accel_model` preset (default
qwen2.5-0.5b: hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4,864,
vocabulary 151,936), randomly initialised, in `--accel_dtype` compute
(bfloat16 by default) with float32 parameters:

* `accelerator`: the device kind, and the peak FLOP/s and memory bandwidth
  the figures are measured against (from `PEAKS` by device kind, or from
  --peak_tflops / --hbm_gbps; absent for an unknown device, e.g. a CPU).
* `train_mfu`: one jitted update (token log-probs, the unified loss with
  SFT's coefficient, gradients, AdamW) on B x T tokens: step time, tokens/s,
  model FLOPs (3x `model_config.forward_flops`: 6 N per token for the
  matmul parameters N, plus attention) and MFU against the peak.
* `decode`: `ugrad.sampling.sample` of B prompts x N new tokens (no EOS):
  new tokens/s, and the bound that memory bandwidth sets: each decode step
  reads every parameter and the KV cache written so far once, so B tokens
  take (parameter bytes + mean KV-cache bytes) / bandwidth.

A whole GRPO step at this size and vocabulary, with its phase breakdown,
is `python -m experiments.perf.benchmark --grpo_vocab`
(experiments/perf/benchmark_grpo_vocab.py: 64 prompts x 8 samples x 512 new
tokens by default). Figures are medians of --repeats runs after a
warm-up. On a CPU the same code runs (use --accel_model=tiny and small
sizes to check it); its figures say nothing about an accelerator.
"""

import dataclasses
from typing import Optional

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ugrad import sampling
from ugrad.models import attention as attn
from ugrad.models import model_config
from ugrad.models import transformer as tr

_MODEL = flags.DEFINE_string("accel_model", "qwen2.5-0.5b", "model preset")
_DTYPE = flags.DEFINE_string("accel_dtype", "bfloat16", "compute dtype")
_TRAIN_BATCH = flags.DEFINE_integer(
    "accel_train_batch", 16, "sequences per update"
)
_TRAIN_LENGTH = flags.DEFINE_integer(
    "accel_train_length", 2048, "tokens per sequence"
)
_DECODE_BATCH = flags.DEFINE_integer(
    "accel_decode_batch", 64, "prompts decoded together"
)
_PROMPT = flags.DEFINE_integer("accel_prompt", 128, "prompt tokens")
_NEW = flags.DEFINE_integer("accel_new_tokens", 512, "new tokens per prompt")
_ATTENTION = flags.DEFINE_list(
    "accel_attention",
    ["auto"],
    "attention kernels to time the update with "
    "(ModelConfig.attention: auto, einsum, xla, cudnn), one train_mfu figure "
    "each; decoding uses the first",
)
_REMAT = flags.DEFINE_string(
    "accel_remat",
    "none",
    "ModelConfig.remat of the update (none, full, "
    "dots); MFU counts the model's FLOPs, not the recomputation",
)
_PEAK = flags.DEFINE_float(
    "peak_tflops",
    0.0,
    "the device's peak dense "
    "FLOP/s in the compute dtype, in TFLOP/s (0: "
    "from PEAKS by device kind)",
)
_HBM = flags.DEFINE_float(
    "hbm_gbps",
    0.0,
    "the device's memory bandwidth in " "GB/s (0: from PEAKS by device kind)",
)

# Dense 16-bit peak TFLOP/s and memory GB/s per chip, from the vendors'
# data sheets, by the start of `jax.devices()[0].device_kind`.
PEAKS = {
    "NVIDIA H200": (989.0, 4800.0),
    "NVIDIA H100": (989.0, 3350.0),
    "NVIDIA A100": (312.0, 2039.0),
    "TPU v5 lite": (197.0, 819.0),
    "TPU v5p": (459.0, 2765.0),
    "TPU v5": (459.0, 2765.0),
    "TPU v6 lite": (918.0, 1640.0),
}


def peaks(device_kind: str) -> tuple[Optional[float], Optional[float]]:
  """(peak FLOP/s, bandwidth B/s) of the device: the flags where given,
  else the first `PEAKS` entry the kind starts with, else None."""
  known = next(
      (v for k, v in PEAKS.items() if device_kind.startswith(k)), (None, None)
  )
  flops = _PEAK.value or known[0]
  bandwidth = _HBM.value or known[1]
  return (
      flops * 1e12 if flops else None,
      bandwidth * 1e9 if bandwidth else None,
  )


def _model(name: str, dtype: str, attention: str):
  cfg = model_config.preset(name, 32)
  cfg = dataclasses.replace(
      cfg, dtype=dtype, attention=attention, remat=_REMAT.value
  )
  return cfg, tr.Transformer(cfg, rngs=nnx.Rngs(0))


def train_mfu(
    emit, timer, make_step, peak: Optional[float], repeats: int, attention: str
) -> dict:
  cfg, model = _model(_MODEL.value, _DTYPE.value, attention)
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optax.adamw(1e-5)
  state = {"params": params, "opt": optimizer.init(params)}
  step = make_step(graphdef, optimizer)
  b, t = _TRAIN_BATCH.value, _TRAIN_LENGTH.value
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(2, cfg.vocab_size, (b, t)), jnp.int32)
  completion = jnp.ones((b, t), jnp.int32)

  def run():
    state["params"], state["opt"], loss = step(
        state["params"], state["opt"], tokens, completion
    )
    loss.block_until_ready()

  seconds = timer({"step": run}, repeats)["step"]
  n = model_config.matmul_params(
      cfg, sum(x.size for x in jax.tree.leaves(params))
  )
  flops = 3 * model_config.forward_flops(cfg, n, b, t)
  figure = dict(
      figure="train_mfu",
      model=_MODEL.value,
      dtype=_DTYPE.value,
      attention=attn.attention_kernel(attention, cfg.dtype),
      remat=cfg.remat,
      params_matmul=n,
      batch=b,
      length=t,
      step_s=round(seconds, 6),
      tokens_per_s=round(b * t / seconds),
      tflops_per_s=round(flops / seconds / 1e12, 3),
      mfu=round(flops / seconds / peak, 3) if peak else None,
  )
  emit(**figure)
  return figure


def decode_bound_s(
    cfg, params, batch: int, prompt: int, new: int, bandwidth: float
) -> float:
  """Seconds the memory traffic of decoding `new` tokens needs at best
  (parameters counted in the compute dtype: the fewest bytes a decoder
  could read them in)."""
  param_bytes = sum(
      x.size * jnp.dtype(cfg.dtype).itemsize for x in jax.tree.leaves(params)
  )
  kv_per_token = (
      2
      * cfg.num_layers
      * cfg.num_kv_heads
      * cfg.head_dim
      * jnp.dtype(cfg.dtype).itemsize
  )
  mean_kv = batch * (prompt + new / 2) * kv_per_token
  return new * (param_bytes + mean_kv) / bandwidth


def decode(
    emit, timer, bandwidth: Optional[float], repeats: int, attention: str
) -> dict:
  cfg, model = _model(_MODEL.value, _DTYPE.value, attention)
  graphdef, params = nnx.split(model, nnx.Param)
  b, p, n = _DECODE_BATCH.value, _PROMPT.value, _NEW.value
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(2, cfg.vocab_size, (b, p)), jnp.int32)
  mask = jnp.ones((b, p), jnp.int32)
  config = sampling.SamplingConfig(
      max_new_tokens=n, eos_id=None, temperature=1.0
  )

  def run():
    out = sampling.sample(
        graphdef, params, prompts, mask, jax.random.key(0), config
    )
    out.tokens.block_until_ready()

  seconds = timer({"decode": run}, repeats)["decode"]
  figure = dict(
      figure="decode",
      model=_MODEL.value,
      dtype=_DTYPE.value,
      batch=b,
      prompt=p,
      new_tokens=n,
      seconds=round(seconds, 6),
      tokens_per_s=round(b * n / seconds),
  )
  if bandwidth:
    bound = decode_bound_s(cfg, params, b, p, n, bandwidth)
    figure.update(
        bound_tokens_per_s=round(b * n / bound),
        fraction_of_bound=round(bound / seconds, 3),
    )
  emit(**figure)
  return figure


def main(emit, timer, make_step, repeats: int) -> dict:
  """The --accelerator figures. `emit` prints one, `timer(fns, repeats)`
  gives each function's median seconds, `make_step(graphdef, optimizer)`
  the jitted update (experiments.perf.benchmark's)."""
  kind = jax.devices()[0].device_kind
  peak, bandwidth = peaks(kind)
  emit(
      figure="accelerator",
      device_kind=kind,
      peak_tflops=peak / 1e12 if peak else None,
      hbm_gbps=bandwidth / 1e9 if bandwidth else None,
  )
  train = [
      train_mfu(emit, timer, make_step, peak, repeats, attention)
      for attention in _ATTENTION.value
  ]
  return {
      "train_mfu": train,
      "decode": decode(emit, timer, bandwidth, repeats, _ATTENTION.value[0]),
  }
