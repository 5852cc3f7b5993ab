"""One GRPO step at a real shape and vocabulary, with its phase breakdown.

  python -m experiments.perf.benchmark --grpo_vocab [--peak_tflops=989]

runs ugrad's GRPO step (experiments/configs/grpo.py's settings: the
coefficient, its normaliser, AdamW, trimmed padding) on the `--vocab_model`
preset (default qwen2.5-0.5b), randomly initialised, with a vocabulary of
`--vocab_size` ids (default Qwen2.5's 151,936), so the sampler chooses among
all of them and the update's head spans them all. The step is the trainer's
(`PolicyLearner.draw` / `prepare`, `Trainer.update_on`) through the same
jitted functions: `sampling.sample` (B random prompts of P ids, G samples
of up to N new tokens, EOS `--vocab_eos`), the reward, the reference's
log-probs (`update.policy_logprobs`) and the update (`update.make_update` of
`update.policy_loss`), without a tokenizer, text, metrics file or
checkpoint. The reward needs no tokenizer: `ugrad.rewards.token_set` of the
even ids (about half of a random completion's tokens, so groups differ).

One JSON line, `grpo_vocab_step`: the first step's seconds (compilation
included), s/step (median of --repeats after it, and all), the phases
(sample: the sampler and the copy of its output to the host; reward;
reference: the trimmed rollout to the device, its reference log-probs and
back; update: the rollout to the device, the update and its metrics),
completion tokens/s, and the analytic model FLOPs per phase (`step_flops`)
with TFLOP/s and MFU against the peak (--peak_tflops, else by device kind;
null on a CPU).

On a CPU check it at a tiny size, e.g. `--vocab_model=tiny
--vocab_prompts=2 --vocab_group=2 --vocab_prompt_len=4
--vocab_new_tokens=4 --vocab_micro_batches=1 --repeats=1`; never at 0.5B.
"""

import dataclasses
import statistics
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import grpo as grpo_config
from experiments.perf import benchmark_accelerator
from ugrad import coefficients
from ugrad import errors
from ugrad import models
from ugrad import rewards as rewards_lib
from ugrad import rollout as rollout_lib
from ugrad import sampling
from ugrad import sources
from ugrad.models import model_config
from ugrad.runtime import distributed
from ugrad.training import adamw
from ugrad.training import build
from ugrad.training import trimming
from ugrad.training import update as update_lib
from ugrad.training import validate

_MODEL = flags.DEFINE_string("vocab_model", "qwen2.5-0.5b", "model preset")
_VOCAB = flags.DEFINE_integer(
    "vocab_size", 151936, "vocabulary (embedding rows and sampled ids)"
)
_PROMPTS = flags.DEFINE_integer("vocab_prompts", 64, "prompts per step (B)")
_GROUP = flags.DEFINE_integer("vocab_group", 8, "samples per prompt (G)")
_PROMPT_LEN = flags.DEFINE_integer("vocab_prompt_len", 128, "prompt ids (P)")
_NEW = flags.DEFINE_integer("vocab_new_tokens", 512, "new tokens at most (N)")
_MICRO = flags.DEFINE_integer(
    "vocab_micro_batches",
    8,
    "config.micro_batches of the update (its rows in that many parts)",
)
_DTYPE = flags.DEFINE_string(
    "vocab_dtype", "auto", "config.compute_dtype (auto: bf16 off the CPU)"
)
_ATTENTION = flags.DEFINE_string("vocab_attention", "auto", "config.attention")
_REMAT = flags.DEFINE_string("vocab_remat", "none", "config.remat")
_EOS = flags.DEFINE_integer(
    "vocab_eos", 151645, "EOS id (Qwen2.5's <|im_end|>)"
)
_PAD = flags.DEFINE_integer(
    "vocab_pad", 151643, "padding id (Qwen2.5's <|endoftext|>)"
)

REWARD = "benchmark_even_ids"


def _config():
  """experiments/configs/grpo.py at the flags' work."""
  c = grpo_config.get_config()
  c.model = _MODEL.value
  c.reward = REWARD
  c.sampling.questions = _PROMPTS.value
  c.sampling.group_size = _GROUP.value
  c.sampling.max_new_tokens = _NEW.value
  c.micro_batches = _MICRO.value
  c.compute_dtype = _DTYPE.value
  c.attention = _ATTENTION.value
  c.remat = _REMAT.value
  return c


def sample_flops(cfg, n: int, prompts: int, group: int, p: int, new: int):
  """Model FLOPs of sampling: the prefill of B prompts of P tokens (the head
  at the last position only), then N - 1 decode steps of B * G rows, step i
  attending to the P + i + 1 keys in use."""
  head = cfg.vocab_size * cfg.hidden_size
  attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim
  prefill = prompts * (2 * (n - head) * p + 2 * head + attention * p * p)
  steps = new - 1
  keys = steps * p + steps * (steps + 1) / 2
  return float(prefill + prompts * group * (2 * n * steps + attention * keys))


def step_flops(cfg, n: int, prompts: int, group: int, p: int, new: int, width):
  """Analytic model FLOPs per phase of one step; `width`: the update's
  (trimmed) columns."""
  rows = prompts * group
  forward = model_config.forward_flops(cfg, n, rows, width)
  return {
      "sample": sample_flops(cfg, n, prompts, group, p, new),
      "reference": forward,
      "update": 3 * forward,
  }


class Step:
  """The jitted functions of one GRPO step and the state they train."""

  def __init__(self, config, vocab: int, eos: int, pad: int):
    for name, value in (("vocab_eos", eos), ("vocab_pad", pad)):
      if not 0 <= value < vocab:
        raise errors.UserError(
            f"--{name}={value} is not an id of the {vocab}-id vocabulary"
        )
    self.config = config
    rows = config.sampling.questions * config.sampling.group_size
    if rows % config.micro_batches:
      raise errors.UserError(
          f"--vocab_micro_batches={config.micro_batches} does not divide "
          f"the step's {rows} rows"
      )
    rewards_lib.register(
        REWARD, rewards_lib.token_set(range(0, vocab, 2)), replace=True
    )
    # The config's names and ranges (its full check wants an init_from).
    validate.check_settings(config)
    self.mesh = build.make_mesh(config)
    self.cfg = dataclasses.replace(
        models.preset(
            config.model,
            vocab,
            dtype=build.compute_dtype(config),
            param_dtype=config.param_dtype,
            remat=config.remat,
            attention=config.attention,
        ),
        vocab_size=vocab,
    )
    self.graphdef, self.reference = build.init_params(
        models.Transformer, self.cfg, config.seed, self.mesh
    )
    self.params = jax.tree.map(jnp.copy, self.reference)
    self.optimizer = adamw.make_optimizer(config)
    self.opt_state = update_lib.init_optimizer(
        self.optimizer, self.params, self.mesh.replicated
    )
    hp = build.coef_hparams(config)
    self.needed = build.needed_fields(config)
    self.temperature = build.train_temperature(config)
    self.update = update_lib.make_update(
        update_lib.policy_loss(
            self.graphdef,
            coefficients.make_coefficient(config.coef.name, **hp),
            build.normalizer(config),
            config.sampling.max_new_tokens,
            self.temperature,
            build.sampler_correction(config),
        ),
        self.optimizer,
        config.micro_batches,
        jax.tree.map(lambda x: x.sharding, (self.params, self.opt_state))
        + (self.mesh.replicated,),
    )
    self.sampling = build.sampling_config(
        config,
        types.SimpleNamespace(eos_id=eos, pad_id=pad),
        config.sampling.group_size,
    )
    self.scorer = rewards_lib.make_scorer(
        config.reward, rewards_lib.RewardContext(None)
    )

  def run(self, prompts, mask, key) -> dict:
    """One step; its phases' seconds and figures."""
    config, clock = self.config, [time.perf_counter()]

    def lap():
      clock.append(time.perf_counter())
      return clock[-1] - clock[-2]

    out = distributed.host_get(
        sampling.sample(
            self.graphdef, self.params, prompts, mask, key, self.sampling
        )
    )
    g = config.sampling.group_size
    rollout = rollout_lib.Rollout(
        tokens=np.asarray(out.tokens, np.int32),
        attention_mask=np.asarray(out.attention_mask, np.int32),
        completion_mask=np.asarray(out.completion_mask, np.int32),
        logp_old=np.asarray(out.logp, np.float32),
        group_ids=np.arange(len(out.tokens), dtype=np.int32) // g,
    )
    phases = {"sample": lap()}
    rows = len(rollout.tokens)
    batch = self.scorer(sources.Batch(rollout, [None] * rows, [""] * rows, {}))
    phases["reward"] = lap()
    # PolicyLearner.prepare: the trimmed rollout, its reference log-probs.
    rollout = distributed.put_global(
        trimming.trim(batch.rollout, trimming.bucket_of(config)),
        self.mesh.batch,
    )
    logprobs = lambda params: update_lib.policy_logprobs(
        self.graphdef,
        params,
        rollout.tokens,
        rollout.attention_mask,
        self.temperature,
    )
    extra = {}
    if "logp_ref" in self.needed:
      extra["logp_ref"] = logprobs(self.reference)
    if config.recompute_logp_old:
      extra["logp_old"] = logprobs(self.params)
    rollout = distributed.host_get(rollout.replace(**extra))
    coefficients.validate_rollout(
        config.coef.name, rollout, build.coef_hparams(config)
    )
    phases["reference"] = lap()
    self.params, self.opt_state, metrics = self.update(
        self.params,
        self.opt_state,
        distributed.put_global(rollout, self.mesh.batch),
    )
    loss = float(distributed.host_get(metrics)["loss"])
    phases["update"] = lap()
    return {
        "phases": phases,
        "seconds": clock[-1] - clock[0],
        "completion_tokens": int(batch.rollout.completion_mask.sum()),
        "reward_mean": float(np.mean(batch.rollout.rewards)),
        "width": int(np.shape(rollout.tokens)[1]),
        "loss": loss,
    }


def _prompts(step: Step, b: int, p: int, vocab: int):
  rng = np.random.default_rng(step.config.seed)
  ids = rng.integers(0, vocab, (b, p)).astype(np.int32)
  return distributed.put_global(
      (ids, np.ones((b, p), np.int32)),
      sampling.prompt_sharding(step.mesh.mesh, b),
  )


def main(emit, repeats: int) -> dict:
  """The --grpo_vocab figure: a warm-up step, then `repeats` timed ones."""
  config, vocab = _config(), _VOCAB.value
  b, g, p, n = _PROMPTS.value, _GROUP.value, _PROMPT_LEN.value, _NEW.value
  step = Step(config, vocab, _EOS.value, _PAD.value)
  with jax.set_mesh(step.mesh.mesh):
    prompts, mask = _prompts(step, b, p, vocab)
    key = jax.random.key(config.seed)
    runs = [
        step.run(prompts, mask, jax.random.fold_in(key, i))
        for i in range(repeats + 1)
    ]
  first, timed = runs[0], runs[1:]
  seconds = statistics.median(r["seconds"] for r in timed)
  phases = {
      k: round(statistics.median(r["phases"][k] for r in timed), 4)
      for k in first["phases"]
  }
  total_params = sum(x.size for x in jax.tree.leaves(step.params))
  matmul = model_config.matmul_params(step.cfg, total_params)
  width = timed[-1]["width"]
  flops = step_flops(step.cfg, matmul, b, g, p, n, width)
  peak, _ = benchmark_accelerator.peaks(jax.devices()[0].device_kind)
  total = sum(flops.values())
  figure = dict(
      figure="grpo_vocab_step",
      model=config.model,
      vocab=vocab,
      dtype=step.cfg.dtype,
      attention=config.attention,
      remat=config.remat,
      micro_batches=config.micro_batches,
      prompts=b,
      group=g,
      prompt_len=p,
      new_tokens=n,
      rows=b * g,
      backend=jax.default_backend(),
      device_kind=jax.devices()[0].device_kind,
      params_matmul=matmul,
      first_step_s=round(first["seconds"], 4),
      s_per_step=round(seconds, 4),
      s_per_step_all=[round(r["seconds"], 4) for r in timed],
      phases_s=phases,
      completion_tokens=statistics.median(
          r["completion_tokens"] for r in timed
      ),
      completion_tokens_per_s=round(
          statistics.median(
              r["completion_tokens"] / r["seconds"] for r in timed
          ),
          1,
      ),
      update_width=width,
      reward_mean=round(timed[-1]["reward_mean"], 4),
      loss=timed[-1]["loss"],
      step_flops=flops,
      tflops_per_s=round(total / seconds / 1e12, 4),
      peak_tflops=peak / 1e12 if peak else None,
      mfu=round(total / seconds / peak, 4) if peak else None,
      phase_mfu=(
          {
              k: round(flops[k] / phases[k] / peak, 4)
              for k in flops
              if phases[k] > 0
          }
          if peak
          else None
      ),
  )
  emit(**figure)
  return figure
