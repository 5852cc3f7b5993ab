"""The update and the loop, for policies and reward models alike.

One step: the learner draws the step's batch (a policy run: the source
samples and the reward scores; a reward-model run: the frozen policy's
samples with their labels) and prepares its rollout (the reference's and old
log-probs and a critic's values; the labelled and replayed rows), then for
`ppo_epochs` x `minibatches` the jitted update does the maths:

    update_on(rollout): loss -> grads (summed over micro-batches, divided
                        once by the global normaliser) -> optimizer

and the loop does the bookkeeping around it: metrics, the gradient log,
checkpoints, periodic evaluation. What a method changes is in the config;
what a run kind changes is its learner (`ugrad.training.learner.Learner`:
`PolicyLearner`, `ugrad.training.reward_models.RewardModelLearner`). The
trainer owns the state; learners and hooks return what they change.
"""

import math
import time
from typing import Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from ugrad.training import adamw
from ugrad.training import build
from ugrad.training import learner as learner_lib
from ugrad.runtime import checkpoint as checkpoint_lib
from ugrad.runtime import distributed
from ugrad.runtime import gradlog
from ugrad.runtime import metrics as metrics_lib
from ugrad.runtime import paths
from ugrad.runtime import preemption
from ugrad.runtime import profiling
from ugrad.training import records
from ugrad.training import reward_models
from ugrad.training import config_identity
from ugrad.training import runs
from ugrad.training import trimming
from ugrad.training import validate
from ugrad.training import update as update_lib
from ugrad.training.policy_learner import PolicyLearner

# The phases of a step and the metrics that measure wall time
# (`ugrad.training.records`).
PHASES = records.PHASES
TIMING_KEYS = records.TIMING_KEYS
# An update whose metrics here are not finite is never applied.
NON_FINITE_KEYS = ("loss", "grad_norm")

# Before each step's clock starts: hook(context, state, step) -> HookResult.
Hook = learner_lib.Hook
HookResult = learner_lib.HookResult


class Trainer:
  """Builds a run from its config and trains it (resuming if possible).

  Attributes:
    config, workdir.
    context: the `learner.RunContext` the learner is built on; its task,
      mesh, policy (`build.Policy`), init_params (the policy's initial
      parameters) and prompt_len are also the trainer's attributes.
    learner: the run kind's `learner.Learner`.
    hooks: the `learner.Hook`s called before each step.
    state: the checkpointed pytree: "params", "opt_state" and the
      learner's extras; the trainer's alone.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      workdir: str,
      *,
      hooks: Sequence[Hook] = (),
      allow_config_change: bool = False,
  ):
    """Builds the run; restores its newest checkpoint if there is one.

    Raises:
      errors.UserError: the checkpoint's config differs (keys outside
        `config_identity.RESUMABLE_CHANGES`) and no allow_config_change.
    """
    validate.check_config(config)
    if config.trainer == "reward_model":
      reward_models.check_config(config)
    self.config = config
    root = paths.resolve(workdir)
    root.mkdir(parents=True, exist_ok=True)
    self.workdir = str(root)
    self.hooks = list(hooks)
    self.timer = records.PhaseTimer()
    self.context = context = _context(config, self.workdir)
    self.task, self.mesh, self.policy = (
        context.task,
        context.mesh,
        context.policy,
    )
    self.init_params, self.prompt_len = (
        context.init_params,
        context.prompt_len,
    )
    learner_cls = (
        reward_models.RewardModelLearner
        if config.trainer == "reward_model"
        else PolicyLearner
    )
    self.learner: learner_lib.Learner = learner_cls(context)
    self._init_state()
    # Resuming under another config: refused, or (allowed) recorded when
    # training starts.
    self.config_changes = config_identity.check_resume(
        self.workdir,
        self.start_step,
        self.resume_meta.get("config"),
        config,
        allow_config_change,
    )

  def _init_state(self):
    config = self.config
    state = self.learner.init_state()
    params = state["params"]
    self.optimizer = adamw.make_optimizer(config)
    opt_state = update_lib.init_optimizer(
        self.optimizer, params, self.mesh.replicated
    )
    state["opt_state"] = opt_state
    sh = jax.tree.map(lambda x: x.sharding, (params, opt_state))
    self.update = update_lib.make_update(
        self.learner.loss_fn(),
        self.optimizer,
        config.micro_batches,
        sh + (self.mesh.replicated,),
        frozen=self.learner.frozen,
    )
    self.checkpointer = checkpoint_lib.Checkpointer(
        paths.resolve(self.workdir) / runs.CHECKPOINT_DIR,
        config.checkpoint_every,
        config.keep_checkpoints,
    )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        state,
    )
    restored = self.checkpointer.restore(abstract)
    self.start_step, self.state, self.resume_meta = 0, state, {}
    if restored is not None:
      self.start_step, self.state, self.resume_meta = restored
      logging.info("Resumed %s at step %d", self.workdir, self.start_step)

  def device_batch(self, rollout):
    """A host rollout (the same on every process) on the mesh, rows over
    the batch axes; each process puts only its own shards."""
    return self.context.device_batch(rollout)

  # --- one step -----------------------------------------------------------

  def _minibatches(self, step: int, epoch: int, rows: int):
    """Row orders of the step's minibatches: whole groups, shuffled."""
    config = self.config
    chunk = self.learner.chunk
    groups = rows // chunk
    order = np.arange(groups)
    if config.ppo_epochs > 1 or config.minibatches > 1:
      order = np.random.default_rng([config.seed, step, epoch, 7]).permutation(
          groups
      )
    rows_of = (order[:, None] * chunk + np.arange(chunk)).reshape(-1)
    return np.split(rows_of, config.minibatches)

  def update_on(self, rollout, step: int) -> dict:
    """One optimizer update of the state on a (host) rollout of step
    `step`; its metrics as floats.

    Raises:
      FloatingPointError: the loss or the gradient norm is not finite;
        the update never becomes the state (the check reads the metrics
        fetched anyway: no extra host sync, the compiled update as it was).
    """
    params, opt_state, metrics = self.update(
        self.state["params"],
        self.state["opt_state"],
        self.device_batch(rollout),
    )
    metrics = {k: float(v) for k, v in distributed.host_get(metrics).items()}
    bad = {
        k: metrics[k] for k in NON_FINITE_KEYS if not math.isfinite(metrics[k])
    }
    if bad:
      what = " and ".join(f"{k} is {v}" for k, v in bad.items())
      raise FloatingPointError(self._nan_message(step, what))
    self.state = dict(self.state, params=params, opt_state=opt_state)
    return metrics

  def rollout(self, step: int):
    """The learner's (batch, host rollout) of step `step`, on the phase
    clock: the draw is "sample", the rest "prepare". The rollout is
    trimmed (`ugrad.training.trimming`, `config.trim_bucket`): every
    minibatch of the step has its width."""
    batch = self.learner.draw(self.state, step)
    self.timer.lap("sample")
    rollout = self.learner.prepare(self.state, batch, step)
    rollout = trimming.trim(rollout, trimming.bucket_of(self.config))
    self.timer.lap("prepare")
    return batch, rollout

  def _run_hooks(self, step: int) -> dict:
    """Calls the hooks; hands what they change to the learner; returns
    their metrics."""
    metrics = {}
    for hook in self.hooks:
      result = hook(self.context, self.state, step)
      if result.reward_models is not None:
        self.learner.use_reward_models(result.reward_models)
      metrics.update(result.metrics)
    return metrics

  def train_step(self, step: int, gradient_log, writer) -> dict:
    config = self.config
    # Before the clock starts: a hook's work is not the step's.
    hook_metrics = self._run_hooks(step)
    start = time.perf_counter()
    self.timer.restart()
    batch, rollout = self.rollout(step)
    rows = rollout.tokens.shape[0]
    step_metrics = []
    update_index = 0
    for epoch in range(config.ppo_epochs):
      for rows_idx in self._minibatches(step, epoch, rows):
        mb = jax.tree.map(lambda x: x[rows_idx], rollout)
        metrics = self.update_on(mb, step)
        self.state, learner_metrics = self.learner.after_update(self.state, mb)
        metrics.update(learner_metrics)
        self.timer.lap("update")
        if update_index == 0:  # The last save had this step's time to land.
          self._log_checkpoints(gradient_log)
        records.log_update(
            gradient_log,
            config,
            step * self._updates_per_step() + update_index + 1,
            step,
            batch,
            metrics,
            np.asarray(rollout.tokens)[rows_idx],
        )
        self.timer.lap("host")
        step_metrics.append(metrics)
        update_index += 1
    metrics = {
        k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]
    }
    metrics.update({f"source_{k}": v for k, v in batch.metrics.items()})
    metrics.update(self.learner.batch_stats(batch))
    metrics.update(hook_metrics)
    self.state = self.learner.after_step(self.state, step)
    if config.sample_log_every and step % config.sample_log_every == 0:
      for i in range(min(3, len(batch.texts))):
        writer.write_text(
            step + 1,
            f"sample_{i}",
            self.task.prompt(batch.examples[i]) + batch.texts[i],
        )
    self.timer.lap("host")
    elapsed = time.perf_counter() - start
    tokens = int(np.asarray(batch.rollout.attention_mask).sum())
    metrics["tokens_per_s"] = tokens * config.ppo_epochs / elapsed
    metrics["update_width"] = float(np.shape(rollout.tokens)[1])
    metrics["step_time_s"] = elapsed
    metrics.update(self.timer.metrics())
    return metrics

  def _updates_per_step(self) -> int:
    return self.config.ppo_epochs * self.config.minibatches

  def _log_checkpoints(self, gradient_log):
    """Records the checkpoints whose saves are done in the gradient log."""
    for step, digest in self.checkpointer.finish():
      gradient_log.append_checkpoint(step, digest)

  def _nan_message(self, step: int, what: str) -> str:
    """`what` went wrong in step `step` (from 0); the line names the
    checkpoint to resume from."""
    steps = self.checkpointer.all_steps()
    where = (
        f"the last good checkpoint is step {steps[-1]} in "
        f"{self.checkpointer.directory}; rerun to resume from it (with a "
        "lower optim.lr, say, and --allow_config_change)"
        if steps
        else "no checkpoint was written yet"
    )
    return (
        f"{what} at step {step + 1}; stopping without applying or saving "
        f"it ({where})"
    )

  def _save(self, step: int, gradient_log, *, force: bool, wait: bool):
    """Checkpoints the state after `step` updates when it is due (`force`:
    anyway); a state that is not finite (a critic or a reference that
    diverged after a finite update) is never saved: FloatingPointError."""
    if not (force or self.checkpointer.should_save(step)):
      return
    if not update_lib.all_finite(self.state):
      raise FloatingPointError(
          self._nan_message(step - 1, "the train state is not finite")
      )
    self.checkpointer.save(
        step,
        self.state,
        {
            "step": step,
            "gradlog_head": gradient_log.head,
            "config": self.config.to_json(),
        },
        force=force,
        wait=wait,
    )

  # --- the loop -------------------------------------------------------------

  def train(self) -> dict:
    """Runs the remaining steps, saves the model; returns the last metrics."""
    with jax.set_mesh(self.mesh.mesh):  # Layer boundaries see the mesh.
      return self._train()

  def _train(self) -> dict:
    config = self.config
    if distributed.is_main():
      writer = metrics_lib.MetricsWriter(
          self.workdir, resume_step=self.start_step
      )
      gradient_log = gradlog.GradientLog(
          paths.resolve(self.workdir) / runs.GRADIENT_LOG,
          resume_step=self.start_step * self._updates_per_step(),
          expected_head=self.resume_meta.get("gradlog_head"),
      )
    else:  # Process 0 writes the run's record; the others only compute.
      writer = gradient_log = records.NoRecord()
    if self.start_step and gradient_log.last_checkpoint != self.start_step:
      # Killed between that save and its record (restore checked the files
      # and wrote a missing manifest).
      gradient_log.append_checkpoint(
          self.start_step, self.checkpointer.manifest_sha256(self.start_step)
      )
    if self.config_changes:
      changes = config_identity.describe_changes(self.config_changes)
      gradient_log.append_config_change(changes)
      writer.write_text(self.start_step, "config_change", changes)
    runs.write_config(self.workdir, config)
    metrics = {}
    bar = tqdm.tqdm(
        total=config.steps,
        initial=self.start_step,
        desc=config.method,
        dynamic_ncols=True,
        disable=config.quiet,
    )
    # .get: a config stored before the key existed (a reward model that
    # iterative RL continues from its own run_config.json) has none.
    profiler = profiling.StepProfiler(
        config.get("profile_steps", ""),
        self.workdir,
        enabled=distributed.is_main(),
    )
    closers = (
        profiler.close,
        bar.close,
        writer.close,
        gradient_log.close,
        self.checkpointer.wait_until_finished,
    )
    with preemption.Watcher() as watcher, records.closing(*closers):
      try:
        for step in range(self.start_step, config.steps):
          profiler.before(step)
          metrics = self.train_step(step, gradient_log, writer)
          profiler.after(step)
          if config.eval_every and (step + 1) % config.eval_every == 0:
            metrics.update(self.learner.periodic_evaluation(self.state))
          writer.write(step + 1, metrics)
          last = step + 1 == config.steps
          stop = not last and watcher.should_stop(step + 1)
          self._save(
              step + 1, gradient_log, force=last or stop, wait=last or stop
          )
          if last or stop:
            self._log_checkpoints(gradient_log)
          bar.update(1)
          bar.set_postfix(
              {
                  k: f"{metrics[k]:.3g}"
                  for k in ("reward_mean", "accuracy", "tokens_per_s")
                  if k in metrics
              }
          )
          if stop:
            raise preemption.Preempted(
                f"stopped by {watcher.reason()} after step {step + 1} of "
                f"{config.steps}: checkpoint step {step + 1} saved in "
                f"{self.checkpointer.directory}; run the same command to "
                "resume"
            )
      except FloatingPointError:
        # The checkpoints to resume from, recorded as after any save.
        self._log_checkpoints(gradient_log)
        raise
    self.learner.save(self.workdir, self.state)
    return metrics

  def evaluate(self, params=None, num_questions: Optional[int] = None) -> dict:
    """The learner's held-out evaluation of `params` (default: the current
    ones)."""
    params = self.state["params"] if params is None else params
    with jax.set_mesh(self.mesh.mesh):
      return self.learner.evaluate(params, num_questions)


def _context(config, workdir: str) -> learner_lib.RunContext:
  """The task, mesh and policy of `config`; the task takes the policy's
  tokenizer (a Hugging Face policy brings its own)."""
  task = build.make_task(config)
  mesh = build.make_mesh(config)
  policy, init_params = build.make_policy(config, task.tokenizer, mesh)
  task = build.with_tokenizer(task, policy.tokenizer)
  return learner_lib.RunContext(
      config=config,
      workdir=workdir,
      task=task,
      mesh=mesh,
      policy=policy,
      init_params=init_params,
      prompt_len=build.prompt_length(task, config.data.max_prompt_tokens),
      max_new=config.sampling.max_new_tokens,
  )


def train_reward_model(
    config: ml_collections.ConfigDict,
    workdir: str,
    allow_config_change: bool = False,
) -> dict:
  """Trains (or resumes) the reward-model run of `config` in `workdir`;
  returns the last step's metrics with a final evaluation."""
  trainer = Trainer(config, workdir, allow_config_change=allow_config_change)
  metrics = trainer.train()
  return dict(metrics, **trainer.evaluate())
