"""Iterative RL (DeepSeekMath, Algorithm 1): the reward model follows the
policy.

A run with `iterative.iterations = I > 1` splits its `steps` into I equal
iterations. At the end of each, the trainer resets the reference to the
current policy; before the first step of iteration k >= 1 every learned
reward model of the run (`reward_model`, `process_reward_model`) continues
training for `iterative.rm_steps` steps on fresh samples of the current
policy, with `iterative.replay` of each batch replayed from the data it was
trained on before. Everything of iteration k lives in
WORKDIR/iterations/iter_<k>: the policy it samples from (`policy`,
`model.json`) and one reward-model run per learned reward, so an interrupted
run resumes there.
"""

import json

from ugrad.training import build
from ugrad.runtime import distributed
from ugrad.runtime import paths
from ugrad.training import learner as learner_lib
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib

ITERATIONS_DIR = "iterations"


def iteration_of(config, step: int) -> int:
  """The iteration (0-based) that training step `step` (0-based) is in."""
  iterations = config.iterative.iterations
  if iterations <= 1:
    return 0
  return step // (config.steps // iterations)


def iteration_dir(workdir: str, k: int) -> str:
  return str(paths.resolve(workdir) / ITERATIONS_DIR / f"iter_{k}")


def continuation_config(previous: str, policy_dir: str, config):
  """The config that continues the reward model in `previous` on samples
  of the policy in `policy_dir`: the earlier run's own config, with the
  iteration's steps and replay."""
  rm_config = runs.read_config(previous)
  rm_config.init_from = policy_dir
  rm_config.rm.init_from = previous
  rm_config.rm.replay = config.iterative.replay
  rm_config.steps = config.iterative.rm_steps
  rm_config.quiet = config.quiet
  return rm_config


def reward_models_of(
    config,
    workdir: str,
    k: int,
    params,
    model_config,
    first_step: bool,
    tokenizer=None,
) -> tuple[dict, dict]:
  """The reward-model workdirs of iteration k, trained first if needed.

  Args:
    config: the RL run's config.
    workdir: the RL run's workdir.
    k: the iteration.
    params: the current policy parameters.
    model_config: the policy's `ModelConfig`.
    first_step: whether the trainer is at the iteration's first step, where
      `params` is the policy the reward models sample from.
    tokenizer: the policy's tokenizer, saved with it.

  Returns:
    ({field: workdir} for each learned reward of the run, the final
    evaluation metrics of each reward model continued in iteration k, named
    "<field>/<metric>").
  """
  dirs = {f: config[f] for f in learner_lib.REWARD_MODEL_FIELDS if config[f]}
  if k == 0:
    return dirs, {}
  directory = iteration_dir(workdir, k)
  if not runs.is_finished_model(directory):
    if not first_step:
      raise RuntimeError(
          f"{directory} lacks the policy of iteration {k}, "
          "which training has passed: the run directory is "
          "incomplete"
      )
    runs.save_model(directory, params, model_config, tokenizer=tokenizer)
  metrics = {}
  for field in dirs:
    previous = (
        dirs[field]
        if k == 1
        else str(paths.resolve(iteration_dir(workdir, k - 1)) / field)
    )
    rm_dir = str(paths.resolve(directory) / field)
    eval_file = paths.resolve(rm_dir) / runs.EVAL_FILE
    if not eval_file.exists():
      result = trainer_lib.train_reward_model(
          continuation_config(previous, directory, config), rm_dir
      )
      if distributed.is_main():
        paths.write_atomic(eval_file, json.dumps({"final": result}, indent=2))
      distributed.sync("iterative_rm_eval")
    final = json.loads(eval_file.read_text())["final"]
    metrics.update(
        {
            f"{field}/{key}": value
            for key, value in final.items()
            if key.endswith(("_acc", "_auc"))
        }
    )
    dirs[field] = rm_dir
  return dirs, metrics


class RewardModelRefresh:
  """The trainer hook (`learner.Hook`) of iterative RL: before the first
  step of an iteration (or the first step after resuming in one), the
  reward models of that iteration, continued on samples of the current
  policy, become the run's rewards (`HookResult.reward_models`); their
  evaluation is logged at the iteration's first step.
  """

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = str(paths.resolve(workdir))
    self.iteration = 0

  def __call__(
      self, context: learner_lib.RunContext, state: dict, step: int
  ) -> learner_lib.HookResult:
    k = iteration_of(self.config, step)
    if k == self.iteration:
      return learner_lib.HookResult()
    first_step = step == k * build.ref_reset_period(self.config)
    dirs, metrics = reward_models_of(
        self.config,
        self.workdir,
        k,
        state["params"],
        context.policy.model_config,
        first_step,
        tokenizer=context.policy.tokenizer,
    )
    self.iteration = k
    return learner_lib.HookResult(
        metrics if first_step else {}, reward_models=dirs
    )


def hooks(config, workdir: str) -> list:
  """The trainer hooks a run's config asks for."""
  if config.iterative.iterations > 1:
    return [RewardModelRefresh(config, workdir)]
  return []
