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
import os

import ml_collections

from ugrad import reward_models
from ugrad import train

ITERATIONS_DIR = "iterations"
REWARD_FIELDS = ("reward_model", "process_reward_model")
EVAL_FILE = "eval.json"


def iteration_of(config, step: int) -> int:
  """The iteration (0-based) that training step `step` (0-based) is in."""
  iterations = config.iterative.iterations
  if iterations <= 1:
    return 0
  return step // (config.steps // iterations)


def iteration_dir(workdir: str, k: int) -> str:
  return os.path.join(workdir, ITERATIONS_DIR, f"iter_{k}")


def continuation_config(previous: str, policy_dir: str,
                        config) -> ml_collections.ConfigDict:
  """The config that continues the reward model in `previous` on samples
  of the policy in `policy_dir`: the earlier run's own config, with the
  iteration's steps and replay."""
  with open(os.path.join(previous, train.CONFIG_FILE)) as f:
    rm_config = ml_collections.ConfigDict(json.load(f))
  rm_config.init_from = policy_dir
  rm_config.rm.init_from = previous
  rm_config.rm.replay = config.iterative.replay
  rm_config.steps = config.iterative.rm_steps
  rm_config.quiet = config.quiet
  return rm_config


def reward_models_of(config, workdir: str, k: int, params, model_config,
                     first_step: bool) -> tuple[dict, dict]:
  """The reward-model workdirs of iteration k, trained first if needed.

  Args:
    config: the RL run's config.
    workdir: the RL run's workdir.
    k: the iteration.
    params: the current policy parameters.
    model_config: the policy's `ModelConfig`.
    first_step: whether the trainer is at the iteration's first step, where
      `params` is the policy the reward models sample from.

  Returns:
    ({field: workdir} for each learned reward of the run, the final
    evaluation metrics of each reward model continued in iteration k, named
    "<field>/<metric>").
  """
  dirs = {f: config[f] for f in REWARD_FIELDS if config[f]}
  if k == 0:
    return dirs, {}
  directory = iteration_dir(workdir, k)
  if not os.path.exists(os.path.join(directory, train.MODEL_FILE)):
    if not first_step:
      raise RuntimeError(f"{directory} lacks the policy of iteration {k}, "
                         "which training has passed: the run directory is "
                         "incomplete")
    train.save_model(directory, params, model_config)
  metrics = {}
  for field in dirs:
    previous = dirs[field] if k == 1 else os.path.join(
        iteration_dir(workdir, k - 1), field)
    rm_dir = os.path.join(directory, field)
    eval_file = os.path.join(rm_dir, EVAL_FILE)
    if not os.path.exists(eval_file):
      result = reward_models.train_reward_model(
          continuation_config(previous, directory, config), rm_dir)
      with open(eval_file, "w") as f:
        json.dump({"final": result}, f, indent=2)
    with open(eval_file) as f:
      final = json.load(f)["final"]
    metrics.update({f"{field}/{key}": value for key, value in final.items()
                    if key.endswith(("_acc", "_auc"))})
    dirs[field] = rm_dir
  return dirs, metrics
