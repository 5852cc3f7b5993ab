r"""Launches one experiment: a config names a source, a reward, a coefficient.

  python -m experiments.main --config=experiments/configs/grpo.py \
      --workdir=runs/grpo --config.coef.beta=0.0

A workdir that holds a checkpoint resumes. On the embedded task an RL config
without `init_from` first trains (or reuses) the SFT policy in WORKDIR/sft and
prints the held-out greedy accuracy of the SFT and of the trained policy.

Several hosts: run the same command on every host, with `--distributed` on a
Cloud TPU VM slice or under SLURM (JAX finds its peers), or with
`--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`
elsewhere; `--config.mesh.*` lays the devices out (see base.py).
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from ugrad.runtime import checkpoint
from ugrad.runtime import compile_cache
from ugrad.runtime import distributed
from ugrad.runtime import host_memory
from ugrad.training import iterative
from ugrad.runtime import lock
from ugrad.runtime import paths
from ugrad.runtime import preemption
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "HOST:PORT of process 0 of a multi-process "
    "run (with --num_processes and --process_id)")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "processes of a multi-process run")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", -1, "this process's index in a multi-process run")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "show the traceback of an error (also: "
    "UGRAD_TRACEBACK=1)")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "join a multi-host run whose peers JAX detects "
    "(Cloud TPU VM slices, SLURM, Open MPI)")


def _report(name: str, result: dict) -> str:
  lo, hi = result["greedy_acc_ci"]
  return (f"{name} greedy accuracy on {result['eval_questions']} held-out "
          f"questions: {100 * result['greedy_acc']:.1f}% "
          f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})")


def needs_sft_warm_start(config) -> bool:
  """Whether a run on the embedded task must first train its SFT policy:
  every run but SFT itself, when no init_from is given."""
  return (not config.init_from and config.task == "arithmetic" and
          (config.coef.name != "sft" or config.trainer != "policy"))


def sft_config(config) -> ml_collections.ConfigDict:
  """The SFT warm-start run of a config on the embedded task."""
  sft = ml_collections.ConfigDict(config.to_dict())
  ws = config.warm_start
  sft.method = "sft_warm_start"
  sft.trainer = "policy"
  sft.init_from = ""
  sft.source = "dataset"
  sft.reward = "none"
  sft.coef = ml_collections.ConfigDict({"name": "sft"})
  sft.normalizer = "sequence"
  sft.steps = ws.steps
  sft.batch_size = ws.batch_size
  sft.optim.lr = ws.lr
  sft.optim.warmup_steps = ws.warmup_steps
  sft.ppo_epochs = sft.minibatches = sft.micro_batches = 1
  sft.sampling.pairs = False
  sft.ref_reset_every = 0
  sft.iterative.iterations = 1
  sft.eval_every = 0
  sft.checkpoint_every = max(ws.steps // 4, 1)
  return sft


def warm_start(config, workdir: str) -> str:
  """Trains (or reuses) the SFT policy of the embedded task in
  WORKDIR/sft and returns that directory."""
  sft_dir = str(paths.resolve(workdir) / "sft")
  if not (paths.resolve(sft_dir) / runs.POLICY_DIR).exists():
    logging.info("No init_from: training the SFT policy in %s", sft_dir)
    trainer_lib.Trainer(sft_config(config), sft_dir).train()
  return sft_dir


def run(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, holding its lock; returns held-out
  results."""
  with lock.hold(workdir):
    return _run(config, workdir)


def _run(config, workdir: str) -> dict:
  warm = needs_sft_warm_start(config)
  if warm:  # The run's own settings, before spending the warm start.
    validate.check_settings(config)
  if warm:
    config.init_from = warm_start(config, workdir)
  if config.trainer == "reward_model":
    result = {"final": trainer_lib.train_reward_model(config, workdir)}
    _print(json.dumps(result, indent=2, sort_keys=True))
    _write_eval(workdir, result)
    return result
  trainer = trainer_lib.Trainer(config, workdir,
                          hooks=iterative.hooks(config, workdir))
  results = {}
  if warm:
    results["sft"] = _cached_eval(trainer, config.init_from,
                                  trainer.init_params)
    _print(_report("SFT policy", results["sft"]))
  trainer.train()
  results["final"] = trainer.evaluate()
  _print(_report(f"{config.method} policy", results["final"]))
  _write_eval(workdir, results)
  return results


def _print(text: str):
  if distributed.is_main():
    print(text, flush=True)


def _write_eval(workdir: str, results: dict):
  """WORKDIR/eval.json: written last, so it marks a finished run."""
  if not distributed.is_main():
    return
  (paths.resolve(workdir) / runs.EVAL_FILE).write_text(
      json.dumps(results, indent=2))


def _cached_eval(trainer, run_dir: str, params) -> dict:
  path = paths.resolve(run_dir) / runs.EVAL_FILE
  if path.exists():
    return json.loads(path.read_text())
  result = trainer.evaluate(params)
  if distributed.is_main():
    path.write_text(json.dumps(result))
  return result


# What a user can fix (a config, a path, a data file, a held workdir, a
# diverged run): one line, no traceback. Anything else is a bug: traceback.
USER_ERRORS = (ValueError, KeyError, OSError, lock.WorkdirInUse,
               FloatingPointError, checkpoint.UnreadableCheckpoints)
EXIT_ERROR = 1
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved; run the same command again.


def error_line(e: BaseException) -> str:
  message = e.args[0] if isinstance(e, KeyError) and e.args else e
  return f"error: {message}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  host_memory.keep_freed_memory()
  compile_cache.enable()
  try:
    try:
      config = _CONFIG.value  # Loading the file and its overrides.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise ValueError(f"--config: {type(e).__name__}: {e}") from e
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value, auto=_DISTRIBUTED.value)
    run(config, _WORKDIR.value)
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except USER_ERRORS as e:
    if _TRACEBACK.value or os.environ.get("UGRAD_TRACEBACK"):
      raise
    print(error_line(e) + "  (--traceback shows where)", file=sys.stderr,
          flush=True)
    sys.exit(EXIT_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad flag or override (`--config.nosuch=1`)
  reported as one line."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-exception-caught
    if "--traceback" in argv or os.environ.get("UGRAD_TRACEBACK"):
      raise
    message = e
    if isinstance(e, (KeyError, AttributeError)):  # From ml_collections.
      field = str(e.args[0] if e.args else "").strip("\"'")
      message = (f"the config has no field {field!r}; check the "
                 "--config.* overrides")
    print(f"error: {message}  (--traceback shows where)", file=sys.stderr,
          flush=True)
    sys.exit(EXIT_ERROR)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
