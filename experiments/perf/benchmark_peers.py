"""The peers of `experiments.perf.benchmark_grpo`: TRL's GRPOTrainer and Tunix's
GRPOLearner, each running its own loop on the same work as ugrad.

Their packages (the `bench` extra) are imported inside the methods that
use them, so this module imports without them.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from ugrad.training import build
from ugrad.models import model_config


@dataclasses.dataclass
class Work:
  """What every contender does per step, and the files they share."""

  model: str = "qwen2_2.9m"
  prompts: int = 16
  group: int = 8
  new_tokens: int = 24
  temperature: float = 1.0
  beta: float = 0.04
  lr: float = 1e-4
  seed: int = 0
  micro_batches: int = 1  # ugrad's alone
  attention: str = "auto"  # ugrad's alone
  steps: int = 0  # steps each loop is built for (warm-up, timed, one more)
  hf_dir: str = ""  # the initial weights (no tokenizer: ugrad's is the task's)
  workdir: str = ""

  @property
  def rows(self) -> int:
    return self.prompts * self.group


def hf_char_tokenizer(char_tokenizer):
  """ugrad's CharTokenizer as a `transformers` tokenizer with the same ids:
  a BPE without merges splits text into characters."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  specials = ["<pad>", "<bos>", "<eos>"]  # ids 0, 1, 2 as in CharTokenizer
  vocab = {s: i for i, s in enumerate(specials)}
  vocab.update(
      {c: i + len(specials) for i, c in enumerate(char_tokenizer.chars)}
  )
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, []))
  tok.add_special_tokens(specials)
  tok.decoder = decoders.Fuse()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok,
      pad_token="<pad>",
      bos_token="<bos>",
      eos_token="<eos>",
  )


# ---------------------------------------------------------------- TRL


class TrlRun:
  """TRL's GRPOTrainer on the work; a callback gates its steps and its own
  profiling timers (`profiling_context`) are collected."""

  name = "trl"

  def __init__(self, work: "Work", task, examples: Callable[[int], list]):
    self.work, self.task, self.examples = work, task, examples
    self.events = []  # (name, start, end) of TRL's timers, and our marks

  def start(self, gate):
    import datasets  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    import trl  # pylint: disable=import-outside-toplevel
    from trl.extras import profiling  # pylint: disable=import-outside-toplevel

    w = self.work
    events = self.events

    def log_metrics(context, duration):
      events.append(
          (
              context.name.split(".", 1)[1],
              context._start_time,
              context._start_time + duration,
          )
      )  # pylint: disable=protected-access

    profiling.ProfilingContext._log_metrics = log_metrics  # pylint: disable=protected-access
    torch.manual_seed(w.seed)
    examples = [ex for s in range(w.steps) for ex in self.examples(s)]
    # The BOS that ugrad's prompts start with (TRL adds no special tokens).
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": ["<bos>" + self.task.prompt(ex) for ex in examples],
            "index": list(range(len(examples))),
        }
    )
    task = self.task

    def rule_reward(completions, index, **unused):
      return [task.reward(examples[i], c) for i, c in zip(index, completions)]

    class Gate(transformers.TrainerCallback):

      def on_step_begin(self, *unused, **unused_kw):
        events.append(("step_begin", time.perf_counter(), None))
        gate()

      def on_step_end(self, *unused, **unused_kw):
        events.append(("step_end", time.perf_counter(), None))

      def on_log(self, *unused, logs=None, **unused_kw):
        events.append(
            ("log", (logs or {}).get("completions/mean_length"), None)
        )

    model = transformers.AutoModelForCausalLM.from_pretrained(
        w.hf_dir, dtype=torch.float32
    )
    args = trl.GRPOConfig(
        output_dir=os.path.join(w.workdir, "trl"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        use_vllm=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=w.rows,
        gradient_accumulation_steps=1,
        num_generations=w.group,
        max_completion_length=w.new_tokens,
        temperature=w.temperature,
        top_p=1.0,
        top_k=0,
        beta=w.beta,
        learning_rate=w.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta2=0.99,
        max_grad_norm=1.0,
        loss_type="grpo",
        num_iterations=1,
        shuffle_dataset=False,
        max_steps=w.steps,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=w.seed,
        dataloader_num_workers=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=rule_reward,
        args=args,
        train_dataset=dataset,
        processing_class=hf_char_tokenizer(self.task.tokenizer),
        callbacks=[Gate()],
    )
    # Logs stay in the trainer's state, not on stdout between JSON lines.
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()

  def phases(self, steps: list[int], seconds: list[float]) -> dict:
    """Each timed step's phases from TRL's timers between its marks."""
    begins = [e[1] for e in self.events if e[0] == "step_begin"]
    ends = [e[1] for e in self.events if e[0] == "step_end"]
    lengths = [e[1] for e in self.events if e[0] == "log"]
    out = {
        k: []
        for k in (
            "sample",
            "host",
            "reference",
            "update",
            "loop",
            "loss_forward",
            "completion_tokens",
        )
    }
    for step in steps:
      lo, end, hi = begins[step], ends[step], begins[step + 1]

      def spent(name, within=(lo, end)):
        return sum(
            e - s
            for n, s, e in self.events
            if n == name and within[0] <= s and e <= within[1]
        )

      prepare = [
          (s, e)
          for n, s, e in self.events
          if n == "_prepare_inputs" and lo <= s <= end
      ]
      prep_end = prepare[0][1] if prepare else lo
      out["sample"].append(spent("transformers.generate"))
      out["host"].append(spent("_calculate_rewards"))
      out["reference"].append(
          spent("_get_per_token_logps_and_entropies", (lo, prep_end))
      )
      out["update"].append(end - prep_end)
      out["loss_forward"].append(spent("compute_loss"))
      out["loop"].append(hi - end)
      out["completion_tokens"].append(
          lengths[step] * self.work.rows if lengths[step] else None
      )
    return out


# ---------------------------------------------------------------- Tunix


class TunixRun:
  """Tunix's GRPOLearner on the work; its data iterator gates the steps and
  its own perf tracer (`PerfMetricsExport`) gives the phases."""

  name = "tunix"

  def __init__(self, work: "Work", task, examples: Callable[[int], list]):
    self.work, self.task, self.examples = work, task, examples
    self.perf = []  # per global step: Tunix's exported perf metrics
    self.tokens = []  # per global step: completion tokens

  def start(self, gate):
    import optax  # pylint: disable=import-outside-toplevel
    from tunix.models.qwen2 import model as qwen2  # pylint: disable=import-outside-toplevel
    from tunix.models.qwen2 import params as qwen2_params  # pylint: disable=import-outside-toplevel
    from tunix.perf import export as perf_export  # pylint: disable=import-outside-toplevel
    from tunix.perf import metrics as perf_metrics  # pylint: disable=import-outside-toplevel
    from tunix.rl import rl_cluster as rl_cluster_lib  # pylint: disable=import-outside-toplevel
    from tunix.rl.grpo import grpo_learner  # pylint: disable=import-outside-toplevel
    from tunix.rl.rollout import base_rollout  # pylint: disable=import-outside-toplevel
    from tunix.sft import metrics_logger  # pylint: disable=import-outside-toplevel

    w = self.work
    cfg = model_config.preset(w.model, self.task.tokenizer.vocab_size)
    shape = qwen2.ModelConfig(
        num_layers=cfg.num_layers,
        vocab_size=cfg.vocab_size,
        embed_dim=cfg.hidden_size,
        hidden_dim=cfg.mlp_size,
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        num_kv_heads=cfg.num_kv_heads,
        rope_theta=int(cfg.rope_theta),
        norm_eps=cfg.rms_eps,
        use_tied_embedding=cfg.tie_embeddings,
    )
    mesh = jax.make_mesh(
        (1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2
    )
    actor, reference = (
        qwen2_params.create_model_from_safe_tensors(w.hf_dir, shape, mesh)
        for _ in range(2)
    )
    prompt_len = build.prompt_length(self.task)
    role = rl_cluster_lib.Role
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={
            role.ACTOR: mesh,
            role.REFERENCE: mesh,
            role.ROLLOUT: mesh,
        },
        rollout_engine="vanilla",
        offload_to_cpu=False,
        training_config=rl_cluster_lib.RLTrainingConfig(
            actor_optimizer=optax.chain(
                optax.clip_by_global_norm(1.0),
                optax.adamw(w.lr, b1=0.9, b2=0.99, weight_decay=0.0),
            ),
            eval_every_n_steps=10**9,
            max_steps=w.steps,
            metrics_logging_options=metrics_logger.MetricsLoggerOptions(
                log_dir=os.path.join(w.workdir, "tunix")
            ),
            pbar_description=None,
        ),
        rollout_config=base_rollout.RolloutConfig(
            max_tokens_to_generate=w.new_tokens,
            max_prompt_length=prompt_len,
            kv_cache_size=prompt_len + w.new_tokens,
            temperature=w.temperature,
            top_p=1.0,
            top_k=None,
        ),
    )
    export = perf_export.PerfMetricsExport.from_cluster_config(cluster_config)

    def record(query):
      metrics = export(query)
      self.perf.append({k: float(v) for k, (v, _) in metrics.items()})
      return metrics

    perf_config = perf_metrics.PerfMetricsConfig(custom_export_fn=record)
    cluster = rl_cluster_lib.RLCluster(
        actor=actor,
        reference=reference,
        tokenizer=hf_char_tokenizer(self.task.tokenizer),
        cluster_config=cluster_config,
        perf_config=perf_config,
    )
    examples = [ex for s in range(w.steps) for ex in self.examples(s)]
    task = self.task

    def rule_reward(prompts, completions, index, **unused):
      del prompts
      return [task.reward(examples[i], c) for i, c in zip(index, completions)]

    def count_tokens(completions, **unused):
      # One token per character, and the EOS of a completion that ended.
      self.tokens.append(
          sum(min(len(c) + 1, w.new_tokens) for c in completions)
      )
      return {}

    learner = grpo_learner.GRPOLearner(
        rl_cluster=cluster,
        reward_fns=[rule_reward],
        metric_fns=[count_tokens],
        algo_config=grpo_learner.GRPOConfig(
            num_generations=w.group, num_iterations=1, beta=w.beta
        ),
    )

    def batches():
      for step in range(w.steps):
        gate()
        rows = range(step * w.prompts, (step + 1) * w.prompts)
        yield {
            "prompts": np.asarray([task.prompt(examples[i]) for i in rows]),
            "index": np.asarray(rows),
        }

    learner.train(batches())

  def phases(self, steps: list[int], seconds: list[float]) -> dict:
    """Tunix's own perf spans of each step. With rollout, actor and
    reference on one device their device spans overlap and can add up to
    more than the step, and its global_step_time includes the wait at the
    gate, so the rest of the step (loop) is not derived: null."""
    del seconds
    out = {
        k: []
        for k in (
            "sample",
            "host",
            "reference",
            "update",
            "loop",
            "weight_sync",
            "completion_tokens",
        )
    }
    for step in steps:
      m = self.perf[step]
      out["sample"].append(m.get("perf/sum/rollout_time"))
      out["host"].append(None)
      out["reference"].append(m.get("perf/sum/refer_inference_time"))
      out["update"].append(m.get("perf/sum/actor_train_time"))
      out["weight_sync"].append(m.get("perf/weight_sync_time"))
      out["loop"].append(None)
      out["completion_tokens"].append(self.tokens[step])
    return out


# ---------------------------------------------------------------- driver


def missing(name: str) -> Optional[str]:
  """Why a peer cannot run here (its package is not installed), or None."""
  import importlib.util  # pylint: disable=import-outside-toplevel

  packages = {
      "trl": ("trl", "torch", "transformers", "datasets"),
      "tunix": ("tunix",),
  }[name]
  absent = [p for p in packages if importlib.util.find_spec(p) is None]
  if absent:
    return f"{', '.join(absent)} not installed: pip install -e '.[bench]'"
  return None
