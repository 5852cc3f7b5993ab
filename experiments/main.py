r"""Launches one experiment: a config names a source, a reward, a coefficient.

  python -m experiments.main --config=experiments/configs/grpo.py \
      --workdir=runs/grpo --config.coef.beta=0.0

A workdir that holds a checkpoint resumes. On the embedded task an RL config
without `init_from` first trains (or reuses) the SFT policy in WORKDIR/sft and
prints the held-out greedy accuracy of the SFT and of the trained policy.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ugrad import reward_models
from ugrad import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")


def _report(name: str, result: dict) -> str:
  lo, hi = result["greedy_acc_ci"]
  return (f"{name} greedy accuracy on {result['eval_questions']} held-out "
          f"questions: {100 * result['greedy_acc']:.1f}% "
          f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})")


def run(config, workdir: str) -> dict:
  """Trains `config` in `workdir`; returns held-out accuracies."""
  if config.trainer not in ("policy", "reward_model"):
    raise ValueError(f"unknown trainer {config.trainer!r}; valid: policy, "
                     "reward_model")
  if config.trainer == "reward_model":
    result = {"final": reward_models.train_reward_model(config, workdir)}
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    _write_eval(workdir, result)
    return result
  train.validate(config)
  warm = train.needs_sft_warm_start(config)
  trainer = train.Trainer(config, workdir)
  results = {}
  if warm:
    results["sft"] = _cached_eval(trainer, os.path.join(workdir, "sft"),
                                  trainer.init_params)
    print(_report("SFT policy", results["sft"]), flush=True)
  trainer.train()
  results["final"] = trainer.evaluate()
  print(_report(f"{config.method} policy", results["final"]), flush=True)
  _write_eval(workdir, results)
  return results


def _write_eval(workdir: str, results: dict):
  """WORKDIR/eval.json: written last, so it marks a finished run."""
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=2)


def _cached_eval(trainer, run_dir: str, params) -> dict:
  path = os.path.join(run_dir, "eval.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  result = trainer.evaluate(params)
  with open(path, "w") as f:
    json.dump(result, f)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
