"""Defaults shared by every method: the embedded task, the tiny policy, GRPO.

Every config file's `get_config(variant=None)` ends with
`base.apply_variants(c, variant)`, so the text after ':' in
`--config=experiments/configs/grpo.py:tiny` picks variants of it (several:
`:tiny,other`). `VARIANTS` lists them.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import _common
from ugrad import errors
from ugrad.models import lora


def get_config(variant=None):
  """Returns the base config; method files override a few fields.

  Args:
    variant: comma-separated names in `VARIANTS`, or None.
  """
  c = ml_collections.ConfigDict()
  c.method = "base"
  c.trainer = "policy"  # or "reward_model" (orm.py, prm.py)
  c.seed = 0

  # The task: the embedded arithmetic problems, or a JSONL file.
  c.task = "arithmetic"
  # val_fraction > 0 reserves a validation split (for eval_split below).
  c.task_kwargs = ml_collections.ConfigDict(
      dict(
          num_operands=3,
          digits=(1, 2),
          operators="+-",
          val_fraction=0.0,
          n_validation=1024,
          # The tools variant (the calculator environment's task): gold
          # solutions of tool_fraction of the questions call the calculator.
          tools=False,
          tool_fraction=0.5,
      )
  )
  # JSONL tasks (task=gsm8k or task=math): rows of the train and test splits.
  # chat_template: prompts in the chat format of the policy's Hugging Face
  # tokenizer (an instruct model's init_from), with system_prompt ("": none)
  # as the system turn. max_prompt_tokens: a longer prompt in any split
  # stops the run at start-up naming its file and line (0: no limit).
  c.data = ml_collections.ConfigDict(
      dict(
          train_path="",
          test_path="",
          validation_path="",
          chat_template=False,
          system_prompt="",
          max_prompt_tokens=2048,
      )
  )

  # The policy: a model preset, optionally initialised from a checkpoint
  # (a ugrad workdir or a Hugging Face directory). RL configs on the embedded
  # task train their own SFT policy first when init_from is empty.
  c.model = "embedded"
  c.compute_dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
  # Parameters and optimizer state: float32 master weights, or bfloat16 to
  # halve their memory (updates then round to bfloat16).
  c.param_dtype = "float32"
  c.init_from = ""
  # A frozen teacher for on-policy distillation (`distill`): a ugrad run
  # workdir or a Hugging Face directory with the student's tokenizer.
  c.teacher = ""
  # The SFT warm start of RL runs on the embedded task (and sft.py's run):
  # a cosine from 2e-3 down to half of it, so where it ends does not hang
  # on the rounding of its last full-rate steps, and still short of
  # converged, so RL has room (BUILD_NOTES, "a warm start that ends at half
  # its rate").
  c.warm_start = ml_collections.ConfigDict(
      dict(
          steps=1200,
          batch_size=64,
          lr=2e-3,
          warmup_steps=50,
          schedule="cosine",  # optim.schedule
          final_fraction=0.5,  # optim.final_fraction
      )
  )

  # The three families.
  c.source = "online"
  c.reward = "rule"
  c.reward_model = ""  # workdir of an outcome reward model ("model" reward)
  c.process_reward_model = ""  # workdir of a process reward model
  c.coef = _common.coef("grpo")
  # N of the unified loss; "" is the coefficient's own (its
  # `Coefficient.normalizer`). Another is allowed and logged as a deviation.
  c.normalizer = ""

  # Sampling sources.
  c.sampling = ml_collections.ConfigDict(
      dict(
          questions=32,
          group_size=8,
          temperature=1.0,
          top_k=0,
          top_p=1.0,
          max_new_tokens=40,
          pairs=False,
          kto=False,  # each sample and a mismatched row (KTO's z_ref)
          dynamic=False,
          max_draws=4,
          pool_questions=1024,
      )
  )
  c.batch_size = 64  # rows per step for the `dataset` source
  # Multi-turn episodes (ugrad/environments): "" samples one completion per
  # sample; an environment's name ("calculator") runs episodes of at most
  # max_turns policy turns in the sampling.max_new_tokens budget (policy and
  # observation tokens together). More than max_error_rate of a call's
  # episodes whose environment raised stops the run.
  c.environment = ""
  c.episodes = ml_collections.ConfigDict(dict(max_turns=8, max_error_rate=0.1))

  # Optimisation.
  c.steps = 200
  c.optim = ml_collections.ConfigDict(
      dict(
          lr=1e-4,
          warmup_steps=0,
          # After the warm-up: "constant", or "cosine" down to
          # lr x final_fraction at the run's last update.
          schedule="constant",
          final_fraction=0.0,
          weight_decay=0.0,
          b1=0.9,
          b2=0.99,
          grad_clip=1.0,
      )
  )
  c.ppo_epochs = 1
  c.minibatches = 1
  c.micro_batches = 1
  # Trimmed padding (ugrad/training/trimming.py): the reference / old
  # log-prob / value passes and the update run over the batch's real columns
  # (the longest prompt to the longest completion) rounded up to a multiple
  # of this many, at most (P + N) / trim_bucket widths, each compiled once;
  # the loss and gradients are those of the full width. 0: always P + N.
  c.trim_bucket = 16
  c.recompute_logp_old = False
  # The sampler's and the trainer's probabilities differ under top-k / top-p
  # or a lower-precision sampler: "none", "tis", "mis", "icepop" or
  # "seq_mask" (ugrad/coefficients/corrections.py) multiplies every method's
  # coefficient by a stop-gradient factor; floor / cap None: the mode's.
  c.sampler_correction = "none"
  c.sampler_floor = config_dict.placeholder(float)
  c.sampler_cap = config_dict.placeholder(float)
  c.ref_reset_every = 0  # reset the reference every N steps
  # Iterative RL (ugrad/training/iterative.py): `iterations` equal parts of
  # `steps`; after each, the reference resets and the learned reward models
  # continue for `rm_steps` steps on the policy's samples, `replay` of each
  # batch old.
  c.iterative = ml_collections.ConfigDict(
      dict(iterations=1, rm_steps=100, replay=0.1)
  )
  c.critic = ml_collections.ConfigDict(dict(lr=1e-4, value_clip=0.2))
  # LoRA (ugrad/models/lora.py): rank 0 trains every weight; rank r > 0
  # trains only adapters (alpha / r) A B on the projections whose module
  # paths match `targets` (a regular expression), the base frozen and shared
  # with the reference. dropout: on the adapters' inputs, in the update
  # only (each row's masks drawn from a seed of the step). base_dtype:
  # how the targeted kernels are stored while frozen (ugrad/models/
  # quantize.py): "" param_dtype, "float32", "bfloat16", or quantized as
  # "int8" or "nf4" (QLoRA).
  c.lora = ml_collections.ConfigDict(
      dict(
          rank=0,
          alpha=16.0,
          dropout=0.0,
          targets=lora.DEFAULT_TARGETS,
          base_dtype="",
      )
  )

  # Checkpoints, logs, evaluation.
  c.checkpoint_every = 50
  c.keep_checkpoints = 3
  c.sample_log_every = 50
  c.eval_every = 0  # greedy accuracy every N steps (0: only at the end)
  # With eval_every, also pass@k and maj@k from max(ks) samples per question
  # (ks: comma-separated, e.g. "1,4,16"; empty: none).
  c.eval_sampled = ml_collections.ConfigDict(
      dict(ks="", questions=128, temperature=1.0)
  )
  c.eval_questions = 1024
  # Where evaluations draw their questions: "test", or "validation" when
  # choosing settings (task_kwargs.val_fraction or data.validation_path).
  c.eval_split = "test"
  # The device mesh (sizes; -1 = every remaining device; see
  # ugrad/models/sharding.py): batch rows over dcn_data x data x fsdp,
  # parameters' width over fsdp, heads / MLP / vocabulary over tensor.
  c.mesh = ml_collections.ConfigDict(
      dict(dcn_data=1, data=-1, fsdp=1, tensor=1)
  )
  # Activation memory: "none", "full" (recompute each decoder layer in the
  # backward pass), "dots" (keep the projections' and MLP's matmul outputs,
  # recompute the rest), "dots_all" (keep every matmul output, attention's
  # too) or "auto" (full on a TPU or GPU, none on a CPU); `experiments.plan`
  # shows which fits.
  c.remat = "auto"
  # Attention kernel of training and prefill: "einsum" (ugrad's own),
  # "xla" (jax.nn.dot_product_attention), "cudnn" (flash attention on
  # NVIDIA GPUs, 16-bit compute), "splash" (Pallas flash attention on TPUs)
  # or "auto" (splash on a TPU, cudnn on a GPU where it applies, else
  # einsum).
  c.attention = "auto"
  # Training's decoder layers as one lax.scan: compiled once, not once per
  # layer (large models compile in seconds); a transient copy of the
  # layers' weights per call.
  c.scan_layers = False
  c.quiet = False  # no progress bar
  # "START:STOP": a jax.profiler trace of those steps in WORKDIR/profile;
  # `python -m experiments.perf.op_profile WORKDIR` sums it per XLA operation.
  c.profile_steps = ""
  return apply_variants(c, variant)


def tiny(c: ml_collections.ConfigDict):
  """Shrinks config `c` in place to seconds per step on a CPU.

  The size of tests, of `experiments.sweep --smoke` and of quick checks:
  the one-layer model, 2 steps (iterative RL: one step per iteration, its
  reward models 2 steps each), 4 questions x at most 4 samples, 32 new
  tokens, 8 evaluation questions, a checkpoint and a sample log every step,
  a 2-step SFT warm start; reward models label few prefixes with few
  rollouts. The method's own settings (source, reward, coefficient, a group
  size below 4 as PPO's 1) stay.
  """
  c.model = "tiny"
  c.steps = 2
  if c.iterative.iterations > 1:
    c.steps = c.iterative.iterations
    c.iterative.rm_steps = 2
  c.batch_size = 16
  c.sampling.questions = 4
  c.sampling.group_size = min(c.sampling.group_size, 4)
  c.sampling.pool_questions = 8
  c.sampling.max_new_tokens = 32
  c.checkpoint_every = 1
  c.sample_log_every = 1
  c.eval_questions = 8
  c.quiet = True
  c.warm_start.steps = 2
  c.warm_start.batch_size = 16
  if "rm" in c:  # reward-model configs (orm.py, prm.py)
    c.rm.eval_questions = 4
    c.rm.rollouts = 2
    c.rm.prefix_batch = 8


# Name -> a function that changes a config in place.
VARIANTS = {"tiny": tiny}


def apply_variants(
    c: ml_collections.ConfigDict, variant=None
) -> ml_collections.ConfigDict:
  """Applies the comma-separated variants `variant` ("tiny") to `c`.

  Returns:
    `c`, changed in place.

  Raises:
    errors.UserError: for a name that is not in `VARIANTS`.
  """
  for name in (variant or "").split(","):
    name = name.strip()
    if not name:
      continue
    if name not in VARIANTS:
      raise errors.UserError(
          f"unknown config variant {name!r}; valid: "
          f"{', '.join(sorted(VARIANTS))}"
      )
    VARIANTS[name](c)
  return c
