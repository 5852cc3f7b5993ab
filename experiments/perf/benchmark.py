"""Throughput figures: sampling against `transformers`, and the train step.

  python -m experiments.perf.benchmark
  python -m experiments.perf.benchmark --grpo   # see benchmark_grpo.py

prints one JSON line per figure:

* `machine`: the backend, CPU model and load average.
* `matmul`: float32 matmul FLOP/s measured in this run, the yardstick for
  FLOP utilisation.
* `sample`: new tokens/s of `ugrad.sampling.sample` and of `transformers`'
  `generate` (torch, CPU, default dynamic cache) on the SAME weights (written
  with `ugrad.models.hf.save_pretrained`, read with `from_pretrained`), for the
  embedded-task model and the 2.9M Qwen2 model, greedy and at temperature 1,
  B prompts x N new tokens (no EOS: every row makes N tokens).
* `train_step`: tokens/s of one jitted step (token_logprobs + unified_loss +
  grad + AdamW) on the embedded model, and its FLOP utilisation: (6 * params
  * tokens + 12 * layers * B * T^2 * D) per step divided by the matmul FLOP/s.
* with --grpo, instead of `sample` and `train_step`: one GRPO step of ugrad,
  TRL and Tunix on the same work (`experiments.perf.benchmark_grpo`).
* with --accelerator, instead: training MFU and decode bandwidth of a
  published model's shape (`experiments.perf.benchmark_accelerator`).
* with --grpo_vocab, instead: one GRPO step at a published model's shape
  and whole vocabulary, with its phases and MFU
  (`experiments.perf.benchmark_grpo_vocab`).

Every figure is the median of --repeats timed runs after a warm-up run;
contenders of one figure run in turn within each repeat, so load from other
processes on a shared machine hits them alike.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.perf import benchmark_accelerator
from experiments.perf import benchmark_grpo
from experiments.perf import benchmark_grpo_vocab
import ugrad
from ugrad.runtime import host_memory
from ugrad import sampling
from ugrad.models import hf
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr

_BATCH = flags.DEFINE_integer("batch", 128, "prompts per sampling call")
_NEW = flags.DEFINE_integer("new_tokens", 32, "tokens generated per prompt")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed runs per figure")
_MODELS = flags.DEFINE_list(
    "models", ["embedded", "qwen2_2.9m"], "presets to benchmark for sampling"
)
_LAYOUTS = flags.DEFINE_list(
    "layouts", list(tr.CACHE_LAYOUTS), "KV-cache layouts to time"
)
_HF = flags.DEFINE_bool("hf", True, "also time transformers' generate")
_TRAIN = flags.DEFINE_bool("train", True, "time the train step")
_ACCELERATOR = flags.DEFINE_bool(
    "accelerator",
    False,
    "training MFU and decode bandwidth of a real model "
    "shape instead (experiments/perf/benchmark_accelerator.py)",
)
_GRPO = flags.DEFINE_bool(
    "grpo",
    False,
    "time one GRPO step of ugrad, TRL "
    "and Tunix instead (experiments/perf/benchmark_grpo.py)",
)
_GRPO_VOCAB = flags.DEFINE_bool(
    "grpo_vocab",
    False,
    "time one GRPO step at a real "
    "shape and vocabulary instead (experiments/perf/benchmark_grpo_vocab.py)",
)

# A character vocabulary like the embedded task's: pad, eos, digits,
# operators, '=', '#', newline, space, and two spare symbols.
VOCAB = [
    "<pad>",
    "<eos>",
    *"0123456789",
    "+",
    "-",
    "*",
    "=",
    "#",
    "\n",
    " ",
    "?",
]
PAD = 0


def _emit(**figure):
  print(json.dumps(figure), flush=True)


def _median_seconds(fns, repeats):
  """Median wall seconds of each zero-argument function in `fns` (a dict).

  The functions run in turn within each repeat, so a change in the load of
  a shared machine hits every contender alike. One warm-up run each first.
  """
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def _prompts(batch, seed=0):
  """Left-padded arithmetic questions such as '48+27-19=': [B, P] ids, mask."""
  rng = np.random.default_rng(seed)
  texts = []
  for _ in range(batch):
    terms = [str(rng.integers(0, 100)) for _ in range(3)]
    ops = rng.choice(["+", "-"], 2)
    texts.append(f"{terms[0]}{ops[0]}{terms[1]}{ops[1]}{terms[2]}=")
  width = max(map(len, texts))
  ids = np.full((batch, width), PAD, np.int32)
  mask = np.zeros((batch, width), np.int32)
  for row, text in enumerate(texts):
    ids[row, width - len(text) :] = [VOCAB.index(c) for c in text]
    mask[row, width - len(text) :] = 1
  return ids, mask


def measure_matmul(repeats, n=1024):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  seconds = _median_seconds(
      {"mm": lambda: f(a, a).block_until_ready()}, repeats * 4
  )["mm"]
  flops = 2 * n**3 / seconds
  _emit(
      figure="matmul",
      shape=[n, n, n],
      dtype="float32",
      gflops=round(flops / 1e9, 1),
  )
  return flops


def _model(name, seed=0):
  model = tr.Transformer(
      model_config.preset(name, len(VOCAB)), rngs=nnx.Rngs(seed)
  )
  # 5x the 0.02 init gives peaked next-token distributions, so greedy
  # agreement between the two implementations is a meaningful check.
  nnx.update(model, jax.tree.map(lambda x: 5 * x, nnx.state(model, nnx.Param)))
  return model


def _ugrad_runner(model, ids, mask, new_tokens, temperature, layout, out):
  """A function that samples once and leaves the Samples in out[layout]."""
  graphdef, params = nnx.split(model, nnx.Param)
  config = sampling.SamplingConfig(
      max_new_tokens=new_tokens,
      eos_id=None,
      pad_id=PAD,
      temperature=temperature,
      cache_layout=layout,
  )
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  key = jax.random.key(0)

  def run():
    out[layout] = sampling.sample(graphdef, params, ids, mask, key, config)
    out[layout].tokens.block_until_ready()

  return run


def _hf_model(model):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as path:
    hf.save_pretrained(model, path)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    )
  return torch_model.eval(), torch


def _hf_runner(torch_model, torch, ids, mask, new_tokens, temperature, out):
  """A function that runs `generate` once and leaves its ids in out["hf"]."""
  ids, mask = torch.tensor(ids).long(), torch.tensor(mask).long()
  sampling_args = (
      dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
      if temperature
      else dict(do_sample=False)
  )

  def run():
    torch.manual_seed(0)
    with torch.no_grad():
      out["hf"] = torch_model.generate(
          input_ids=ids,
          attention_mask=mask,
          max_new_tokens=new_tokens,
          min_new_tokens=new_tokens,
          pad_token_id=PAD,
          eos_token_id=None,
          **sampling_args,
      ).numpy()

  return run


def benchmark_sampling(name, repeats):
  model = _model(name)
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  ids, mask = _prompts(_BATCH.value)
  b, n = _BATCH.value, _NEW.value
  hf_model = _hf_model(model) if _HF.value else None
  for temperature in (0.0, 1.0):
    out = {}
    runners = {
        f"ugrad_{layout}": _ugrad_runner(
            model, ids, mask, n, temperature, layout, out
        )
        for layout in _LAYOUTS.value
    }
    if hf_model is not None:
      runners["hf_generate"] = _hf_runner(
          *hf_model, ids, mask, n, temperature, out
      )
    seconds = _median_seconds(runners, repeats)
    figure = dict(
        figure="sample",
        model=name,
        params=int(params),
        batch=b,
        prompt_width=ids.shape[1],
        new_tokens=n,
        temperature=temperature,
    )
    figure.update(
        {f"{k}_tokens_per_s": round(b * n / s) for k, s in seconds.items()}
    )
    if hf_model is not None:
      best = min(s for k, s in seconds.items() if k.startswith("ugrad"))
      figure["speedup_vs_hf"] = round(seconds["hf_generate"] / best, 2)
      if temperature == 0.0:
        ugrad_tokens = np.asarray(out[_LAYOUTS.value[0]].tokens)
        same = np.all(ugrad_tokens == out["hf"], axis=1)
        figure["greedy_rows_equal_to_hf"] = float(np.mean(same))
    _emit(**figure)


def train_step_fn(graphdef, optimizer):
  def loss_fn(params, tokens, completion_mask):
    logp = logprobs.token_logprobs(nnx.merge(graphdef, params), tokens)
    coef = jnp.ones_like(logp)  # SFT's coefficient.
    return ugrad.unified_loss(logp, coef, completion_mask)[0]

  def step(params, opt_state, tokens, completion_mask):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, completion_mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def benchmark_train_step(matmul_flops, repeats, batch=64, length=40):
  cfg = model_config.preset("embedded", len(VOCAB))
  graphdef, params = nnx.split(tr.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  optimizer = optax.adamw(1e-3)
  state = {"params": params, "opt": optimizer.init(params)}
  step = train_step_fn(graphdef, optimizer)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(2, len(VOCAB), (batch, length)), jnp.int32)
  completion = jnp.asarray(np.arange(length)[None] >= 10, jnp.int32)
  completion = jnp.broadcast_to(completion, (batch, length))

  def run():
    state["params"], state["opt"], loss = step(
        state["params"], state["opt"], tokens, completion
    )
    loss.block_until_ready()

  seconds = _median_seconds({"step": run}, repeats * 4)["step"]
  n_params = sum(x.size for x in jax.tree.leaves(params))
  flops = 3 * model_config.forward_flops(
      cfg, model_config.matmul_params(cfg, n_params), batch, length
  )
  _emit(
      figure="train_step",
      model="embedded",
      params=int(n_params),
      batch=batch,
      length=length,
      step_ms=round(seconds * 1e3, 2),
      tokens_per_s=round(batch * length / seconds),
      gflops=round(flops / seconds / 1e9, 2),
      flop_utilisation=round(flops / seconds / matmul_flops, 3),
  )


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # For every contender alike.
  _emit(
      figure="machine",
      backend=jax.default_backend(),
      devices=jax.device_count(),
      cpus=os.cpu_count(),
      cpu_model=benchmark_grpo.cpu_model(),
      load_average=[round(x, 2) for x in os.getloadavg()],
  )
  matmul_flops = measure_matmul(_REPEATS.value)
  if _ACCELERATOR.value:
    benchmark_accelerator.main(
        _emit, _median_seconds, train_step_fn, _REPEATS.value
    )
    return
  if _GRPO_VOCAB.value:
    benchmark_grpo_vocab.main(_emit, _REPEATS.value)
    return
  if _GRPO.value:
    benchmark_grpo.main(_REPEATS.value, matmul_flops)
    return
  for name in _MODELS.value:
    benchmark_sampling(name, _REPEATS.value)
  if _TRAIN.value:
    benchmark_train_step(matmul_flops, _REPEATS.value)


if __name__ == "__main__":
  app.run(main)
