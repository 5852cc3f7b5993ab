r"""One GRPO step, side by side: ugrad, TRL's GRPOTrainer, Tunix's GRPOLearner.

  python -m experiments.perf.benchmark --grpo [--repeats=5] \
      [--grpo_peers=ugrad,trl]

The same work for every contender: the `--grpo_model` shape with the same
initial weights (written with `ugrad.models.hf.save_pretrained` for the peers
and as a ugrad run for ugrad),
the embedded task's character vocabulary (a `tokenizers` BPE without merges
for the peers), the prompts ugrad's online source draws at each step, G
samples of up to N new tokens at temperature 1 (EOS ends a completion), the
rule reward, beta, AdamW at the same rate, float32 on the CPU. TRL runs with
`use_vllm=False` and no gradient checkpointing; Tunix with its vanilla
rollout and a KV cache of prompt + new tokens.

Each contender runs its OWN training loop, unchanged, in a thread that waits
at the start of every step (a ugrad trainer hook, a TRL callback, the Tunix
data iterator); the main thread lets the contenders take one step each in
turn (repeat r: ugrad, TRL, Tunix; then r + 1), after one warm-up step each.
A step's seconds run from its release to the next step's start, so they
include each loop's logging and checkpointing. One JSON line per contender:
s/step (median and all), completion tokens/s, and the phases each one's own
timers give (null where it has none): sample, host (decode + reward),
reference (reference and old log-probs), update, loop (logging, gradient log,
checkpoint: the rest of the step). ugrad's line adds its FLOPs per step,
analytic (2N per token forward, 6N per token in the update, N = the matmul
parameters) and from XLA's cost analysis of its compiled sampler, log-prob
and update functions (which counts a while loop's body once), and its fraction
of the FLOP floor at the float32 matmul rate measured in the same run.

Where the phases come from:

* ugrad: the trainer's `time/*_s` metrics (sample minus the reward, timed
  around the scorer; prepare = reference log-probs; update; host = gradient
  log and statistics) and the rest of the step outside its clock (metrics
  file, checkpoint, progress bar), added to host as `loop`.
* TRL: its `profiling_context` timers (`transformers.generate`,
  `_calculate_rewards`, the log-prob forwards inside `_prepare_inputs`,
  `compute_loss` as `loss_forward`); update runs from the end of
  `_prepare_inputs` to `on_step_end` (forward, backward, optimizer); loop
  from there to the next step (logging).
* Tunix: its perf tracer's rollout, reference and actor-training spans; with
  every role on one device these overlap and may add up to more than the
  step, so host and loop are null.
"""

import dataclasses
import json
import os
import statistics
import tempfile
import time

from absl import flags
from absl import logging
from flax import nnx
import jax

from experiments.perf import benchmark_peers
from experiments.perf import lockstep
from experiments.configs import grpo as grpo_config
from ugrad.training import build
from ugrad.runtime import metrics as metrics_lib
from ugrad import sampling
from ugrad.sampling import sampler as sampler_lib
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import update as update_lib
from ugrad.models import hf
from ugrad.models import model_config
from ugrad.models import transformer as tr

CONTENDERS = ("ugrad", "trl", "tunix")

_MODEL = flags.DEFINE_string("grpo_model", "qwen2_2.9m", "model preset")
_PROMPTS = flags.DEFINE_integer("grpo_prompts", 16, "prompts per step")
_GROUP = flags.DEFINE_integer("grpo_group", 8, "samples per prompt (G)")
_NEW = flags.DEFINE_integer("grpo_new_tokens", 24, "new tokens at most")
_LR = flags.DEFINE_float("grpo_lr", 1e-4, "AdamW learning rate")
_BETA = flags.DEFINE_float("grpo_beta", 0.04, "KL weight")
_MICRO = flags.DEFINE_integer(
    "grpo_micro_batches",
    1,
    "ugrad's config.micro_batches (the update's "
    "rows in that many accumulated parts; for model sizes whose update does "
    "not fit at once; the peers are not given it)",
)
_ATTENTION = flags.DEFINE_string(
    "grpo_attention",
    "auto",
    "ugrad's config.attention (the peers use their " "own defaults)",
)
_PEERS = flags.DEFINE_list(
    "grpo_peers", list(CONTENDERS), "contenders, in their order within a repeat"
)


Work = benchmark_peers.Work


def _emit(**figure):
  print(json.dumps(figure), flush=True)


# ---------------------------------------------------------------- the work


def _config(work: Work):
  """ugrad's GRPO config for the work (experiments/configs/grpo.py)."""
  c = grpo_config.get_config()
  c.seed = work.seed
  c.init_from = ugrad_dir(work)
  c.sampling.questions = work.prompts
  c.sampling.group_size = work.group
  c.sampling.max_new_tokens = work.new_tokens
  c.sampling.temperature = work.temperature
  c.coef.beta = work.beta
  c.optim.lr = work.lr
  c.micro_batches = work.micro_batches
  c.attention = work.attention
  c.steps = 10**6  # Stopped by the benchmark.
  c.quiet = True
  return c


def ugrad_dir(work: Work) -> str:
  """Where ugrad reads the initial weights (`write_initial_weights`)."""
  return work.hf_dir.rstrip("/") + ".ugrad"


def write_initial_weights(work: Work, path: str, task) -> int:
  """The preset's seed-0 weights as a Hugging Face directory; returns N,
  the parameters a token's forward pass multiplies by (the output
  projection counted, the embedding lookup not)."""
  # The task's vocabulary, also for a published shape (whose embedding keeps
  # its own rows otherwise): the policy may only sample tokens the task's
  # tokenizer can decode.
  vocab = task.tokenizer.vocab_size
  cfg = dataclasses.replace(
      model_config.preset(work.model, vocab), vocab_size=vocab
  )
  model = tr.Transformer(cfg, rngs=nnx.Rngs(work.seed))
  hf.save_pretrained(model, path)
  # The same weights as a ugrad run with the task's character tokenizer,
  # for ugrad's init_from (a Hugging Face directory brings its own).
  runs.save_model(
      ugrad_dir(work),
      nnx.state(model, nnx.Param),
      cfg,
      tokenizer=task.tokenizer,
  )
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return model_config.matmul_params(cfg, params)


# ---------------------------------------------------------------- ugrad


class UgradRun:
  """ugrad's Trainer on the work, its loop gated by a trainer hook."""

  name = "ugrad"

  def __init__(self, work: Work):
    self.work = work
    self.workdir = os.path.join(work.workdir, "ugrad")
    self.trainer = None
    self.reward_s = {}  # step -> seconds in the reward function
    self.abstract = {}  # function -> abstract arguments of its first call

  def start(self, gate):
    self.trainer = trainer_lib.Trainer(
        _config(self.work),
        self.workdir,
        hooks=[lambda context, state, step: gate() or trainer_lib.HookResult()],
    )
    self._instrument()
    self.trainer.train()

  def examples(self, step: int) -> list:
    """The questions ugrad's online source draws at `step`."""
    return self.trainer.learner.source._questions(step, 0)  # pylint: disable=protected-access

  def _instrument(self):
    """Times the reward and records the abstract arguments of the compiled
    functions (for their cost analysis), without changing what they do."""
    learner = self.trainer.learner
    scorer = learner.scorer

    def timed_scorer(*args, **kwargs):
      start = time.perf_counter()
      out = scorer(*args, **kwargs)
      self.reward_s[len(self.reward_s)] = time.perf_counter() - start
      return out

    learner.scorer = timed_scorer
    learner.logprobs = self._recording("logprobs", learner.logprobs)
    self.trainer.update = self._recording("update", self.trainer.update)
    sampling.sample = self._recording("sample", sampling.sample)

  def _recording(self, name, fn):
    def call(*args):
      if name not in self.abstract:
        self.abstract[name] = jax.tree.map(_abstract, args)
      return fn(*args)

    call.original = fn
    return call

  def close(self):
    sampling.sample = getattr(sampling.sample, "original", sampling.sample)

  def phases(self, steps: list[int], seconds: list[float]) -> dict:
    """Per-step phases (lists) from the trainer's metrics of `steps`."""
    rows = {
        r["step"]: r
        for r in metrics_lib.read_metrics(
            os.path.join(self.workdir, metrics_lib.METRICS_FILE)
        )
    }
    out = {
        k: []
        for k in (
            "sample",
            "host",
            "reference",
            "update",
            "loop",
            "host_log",
            "completion_tokens",
        )
    }
    for step, total in zip(steps, seconds):
      row = rows[step + 1]
      reward = self.reward_s[step]
      out["sample"].append(row["time/sample_s"] - reward)
      out["host"].append(reward)
      out["reference"].append(row["time/prepare_s"])
      out["update"].append(row["time/update_s"])
      # The gradient log and statistics, then metrics writing, the
      # checkpoint and the progress bar outside the trainer's step clock.
      out["host_log"].append(row["time/host_s"])
      out["loop"].append(row["time/host_s"] + total - row["step_time_s"])
      out["completion_tokens"].append(row["response_length"] * self.work.rows)
    return out

  def flops(self, n: int, prompt_len: int) -> dict:
    """Analytic FLOPs per step and XLA's count of the compiled functions."""
    w = self.work
    length = prompt_len + w.new_tokens
    analytic = {
        "sample": 2 * n * (w.prompts * prompt_len + w.rows * w.new_tokens),
        "reference": 2 * n * w.rows * length,
        "update": 6 * n * w.rows * length,
    }
    xla = {}
    graphdef = self.trainer.policy.graphdef
    functions = {  # phase: (jitted function, its leading arguments, calls)
        "sample": (sampler_lib._sample_jit, (), "sample"),  # pylint: disable=protected-access
        "reference": (update_lib.policy_logprobs, (graphdef,), "logprobs"),
        "update": (self.trainer.update.original, (), "update"),
    }
    for phase, (fn, leading, name) in functions.items():
      if name in self.abstract:
        cost = (
            fn.lower(*leading, *self.abstract[name]).compile().cost_analysis()
        )
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla[phase] = float(cost.get("flops", float("nan")))
    return {"analytic": analytic, "xla_cost_analysis": xla}


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


def _median(values):
  values = [v for v in values if v is not None]
  return round(statistics.median(values), 4) if values else None


def run(work: Work, contenders, repeats: int, matmul_flops: float) -> dict:
  """Alternates the contenders for `repeats` timed steps after a warm-up;
  prints and returns one figure per contender that ran."""
  work.steps = repeats + 2
  task = build.make_task(_config(work))
  n = write_initial_weights(work, work.hf_dir, task)
  prompt_len = build.prompt_length(task)
  ugrad_run = UgradRun(work)
  runners = {"ugrad": lambda: ugrad_run}
  runners["trl"] = lambda: benchmark_peers.TrlRun(
      work, task, ugrad_run.examples
  )
  runners["tunix"] = lambda: benchmark_peers.TunixRun(
      work, task, ugrad_run.examples
  )
  missing = {
      name: benchmark_peers.missing(name)
      for name in contenders
      if name != "ugrad"
  }
  for name, why in missing.items():
    if why:
      _emit(figure="grpo_step", contender=name, skipped=why)
  active = [c for c in contenders if not missing.get(c)]
  if "ugrad" not in active:
    raise ValueError("the GRPO benchmark needs ugrad (it draws the prompts)")
  active.remove("ugrad")
  active.insert(0, "ugrad")
  objects, steppers = {}, {}
  try:
    for name in active:
      objects[name] = runners[name]()
      steppers[name] = lockstep.Lockstep(name, objects[name].start)
    for stepper in steppers.values():
      stepper.step()  # Warm-up: compilation, first allocations.
    seconds = {name: [] for name in active}
    for _ in range(repeats):
      for name, stepper in steppers.items():
        seconds[name].append(stepper.step())
  finally:
    for stepper in steppers.values():
      stepper.close()
    ugrad_run.close()
  steps = list(range(1, repeats + 1))
  figures = {}
  for name in active:
    phases = objects[name].phases(steps, seconds[name])
    tokens = phases.pop("completion_tokens")
    median = statistics.median(seconds[name])
    figure = dict(
        figure="grpo_step",
        contender=name,
        model=work.model,
        prompts=work.prompts,
        group=work.group,
        new_tokens=work.new_tokens,
        s_per_step=round(median, 4),
        s_per_step_all=[round(s, 4) for s in seconds[name]],
        completion_tokens_per_s=(
            round(_median([t / s for t, s in zip(tokens, seconds[name])]), 1)
            if None not in tokens
            else None
        ),
        phases_s={k: _median(v) for k, v in phases.items()},
    )
    if name == "ugrad":
      figure.update(
          micro_batches=work.micro_batches,
          attention=work.attention,
          backend=jax.default_backend(),
      )
      flops = ugrad_run.flops(n, prompt_len)
      total = sum(flops["analytic"].values())
      figure.update(
          params_matmul=n,
          flops_per_step=flops,
          matmul_gflops=round(matmul_flops / 1e9, 1),
          floor_s=round(total / matmul_flops, 4),
          fraction_of_floor=round(total / matmul_flops / median, 3),
      )
    figures[name] = figure
  for name in ("trl", "tunix"):
    if name in figures:
      figures[name]["ugrad_speedup"] = round(
          figures[name]["s_per_step"] / figures["ugrad"]["s_per_step"], 2
      )
  for figure in figures.values():
    _emit(**figure)
  return figures


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown"


def main(repeats: int, matmul_flops: float) -> dict:
  """The --grpo figures with the flags' work."""
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint call.
  with tempfile.TemporaryDirectory() as tmp:
    work = Work(
        model=_MODEL.value,
        prompts=_PROMPTS.value,
        group=_GROUP.value,
        new_tokens=_NEW.value,
        beta=_BETA.value,
        lr=_LR.value,
        micro_batches=_MICRO.value,
        attention=_ATTENTION.value,
        hf_dir=os.path.join(tmp, "init"),
        workdir=tmp,
    )
    figures = run(work, _PEERS.value, repeats, matmul_flops)
  _emit(
      figure="grpo_machine_after",
      load_average=[round(x, 2) for x in os.getloadavg()],
  )
  return figures
