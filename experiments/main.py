r"""Launches one experiment: a config names a source, a reward, a coefficient.

  python -m experiments.main --config=experiments/configs/grpo.py \
      --workdir=runs/grpo --config.coef.beta=0.0

Text after ':' in --config picks variants of the config
(`experiments/configs/grpo.py:tiny`: seconds per step on a CPU; see
`experiments/configs/base.py`). A workdir that holds a checkpoint resumes.
On the embedded task an RL config without `init_from` first trains (or
reuses) the SFT policy in WORKDIR/sft (`experiments/configs/sft.py`) and
prints the held-out greedy accuracy of the SFT and of the trained policy.

Several hosts: run the same command on every host, with `--distributed` on a
Cloud TPU VM slice or under SLURM (JAX finds its peers), or with
`--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`
elsewhere; `--config.mesh.*` lays the devices out (see base.py).
"""

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.configs import base
from experiments.configs import sft
from ugrad import errors
from ugrad import models
from ugrad.runtime import checkpoint
from ugrad.runtime import compile_cache
from ugrad.runtime import distributed
from ugrad.runtime import host_memory
from ugrad.runtime import lock
from ugrad.runtime import paths
from ugrad.runtime import preemption
from ugrad.training import iterative
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    "",
    "HOST:PORT of process 0 of a multi-process "
    "run (with --num_processes and --process_id)",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "processes of a multi-process run"
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", -1, "this process's index in a multi-process run"
)
_TRACEBACK = flags.DEFINE_bool(
    "traceback",
    False,
    "show the traceback of an error (also: " "UGRAD_TRACEBACK=1)",
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "resume a workdir whose checkpoint was saved under another config "
    "(the changed keys are recorded in the gradient log); without it such "
    "a rerun is refused, naming them",
)
_BREAK_LOCK = flags.DEFINE_bool(
    "break_lock",
    False,
    "take over the workdir's lock when its holder cannot be checked (a "
    "process on another host, e.g. a container rescheduled under a new "
    "host name): only when that process is gone",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "join a multi-host run whose peers JAX detects "
    "(Cloud TPU VM slices, SLURM, Open MPI)",
)


def _report(name: str, result: dict) -> str:
  lo, hi = result["greedy_acc_ci"]
  return (
      f"{name} greedy accuracy on {result['eval_questions']} held-out "
      f"questions: {100 * result['greedy_acc']:.1f}% "
      f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})"
  )


def needs_sft_warm_start(config) -> bool:
  """Whether a run on the embedded task must first train its SFT policy:
  every run but SFT itself, when no init_from is given."""
  return (
      not config.init_from
      and config.task == "arithmetic"
      and (config.coef.name != "sft" or config.trainer != "policy")
  )


def warm_start(config, workdir: str, allow_config_change: bool = False) -> str:
  """Trains (or reuses) the SFT policy of the embedded task in
  WORKDIR/sft (`sft.warm_start(config)`) and returns that directory. One
  left unfinished (no model.json: killed before or while its model was
  saved) is resumed, which (re)writes the model from its checkpoint."""
  sft_dir = str(paths.resolve(workdir) / "sft")
  if not runs.is_finished_model(sft_dir):
    logging.info("No init_from: training the SFT policy in %s", sft_dir)
    trainer_lib.Trainer(
        sft.warm_start(config), sft_dir, allow_config_change=allow_config_change
    ).train()
  return sft_dir


def run(
    config,
    workdir: str,
    allow_config_change: bool = False,
    break_lock: bool = False,
) -> dict:
  """Trains `config` in `workdir`, holding its lock; returns held-out
  results. A checkpoint saved under another config
  (`config_identity.config_changes`) is resumed only with
  `allow_config_change`; a lock whose holder this host cannot check is taken
  over only with `break_lock` (`lock.acquire`)."""
  with lock.hold(workdir, break_lock):
    return _run(config, workdir, allow_config_change)


def check_ignored_settings(config):
  """Refuses settings the run would ignore: a `model` preset other than
  the default with `init_from`, whose model it does not describe (the
  policy's shape comes from init_from).

  Raises:
    errors.UserError: naming the setting and what init_from holds.
  """
  default = base.get_config().model
  if not config.init_from or config.model == default:
    return
  ignored = (
      f"config.model={config.model!r} is ignored with "
      f"init_from={config.init_from}"
  )
  if runs.is_hf_dir(config.init_from):
    raise errors.UserError(
        f"{ignored} (a Hugging Face directory: its config.json gives the "
        "shape); leave config.model unset"
    )
  if not runs.is_finished_model(config.init_from):
    return  # build reports what init_from lacks.
  saved = runs.saved_model_config(config.init_from)
  wanted = models.preset(config.model, saved.vocab_size)
  differ = [
      f"{f} {getattr(saved, f)} (preset {getattr(wanted, f)})"
      for f in SHAPE_FIELDS
      if getattr(saved, f) != getattr(wanted, f)
  ]
  if differ:
    raise errors.UserError(
        f"{ignored}, which holds another model: {', '.join(differ)}; "
        "leave config.model unset or set it to the model init_from holds"
    )


# The fields of a ModelConfig that are its shape, not its numerics.
SHAPE_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "mlp_size",
    "qkv_bias",
    "tie_embeddings",
)


def _run(config, workdir: str, allow_config_change: bool) -> dict:
  check_ignored_settings(config)
  warm = needs_sft_warm_start(config)
  if warm:  # The run's own settings, before spending the warm start.
    validate.check_settings(config)
  if warm:
    config.init_from = warm_start(config, workdir, allow_config_change)
  if config.trainer == "reward_model":
    result = {
        "final": trainer_lib.train_reward_model(
            config, workdir, allow_config_change
        )
    }
    _print(json.dumps(result, indent=2, sort_keys=True))
    _write_eval(workdir, result)
    return result
  trainer = trainer_lib.Trainer(
      config,
      workdir,
      hooks=iterative.hooks(config, workdir),
      allow_config_change=allow_config_change,
  )
  results = {}
  if warm:
    results["sft"] = _cached_eval(
        trainer, config.init_from, trainer.init_params
    )
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
  paths.write_atomic(
      paths.resolve(workdir) / runs.EVAL_FILE, json.dumps(results, indent=2)
  )


def _cached_eval(trainer, run_dir: str, params) -> dict:
  path = paths.resolve(run_dir) / runs.EVAL_FILE
  if path.exists():
    return json.loads(path.read_text())
  result = trainer.evaluate(params)
  if distributed.is_main():
    paths.write_atomic(path, json.dumps(result))
  return result


# What a user can fix, printed as one line without a traceback: a bad
# config, path or data file (ugrad's own checks raise errors.UserError, a
# missing input errors.MissingInput), a workdir another process holds, a
# diverged run (the trainer names the checkpoint to resume from),
# checkpoints that cannot be read. Anything else is a bug and keeps its
# traceback, a bare ValueError, KeyError or FileNotFoundError included.
USER_ERRORS = (
    errors.UserError,
    lock.WorkdirInUse,
    FloatingPointError,
    checkpoint.UnreadableCheckpoints,
)
# OSErrors of the machine rather than the code: a full disk or quota, a
# read-only file system, no permission. ENOENT is not among them: ugrad
# checks the paths a user gives (errors.MissingInput), so a file that
# vanishes under it is a bug.
ENVIRONMENT_ERRNOS = frozenset(paths.ENVIRONMENT_ERRNOS)
EXIT_ERROR = 1
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved; run the same command again.


def is_user_error(e: BaseException) -> bool:
  """Whether `e` is a problem the user fixes (one line) or a bug."""
  return isinstance(e, USER_ERRORS) or (
      isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS
  )


def error_line(e: BaseException) -> str:
  message = e.args[0] if isinstance(e, KeyError) and e.args else e
  return f"error: {message}"


def _show_traceback() -> bool:
  return _TRACEBACK.value or bool(os.environ.get("UGRAD_TRACEBACK"))


def load_config():
  """The --config value with its overrides.

  Raises:
    errors.UserError: when the file could not be loaded (ml_collections
      defers that error to the first use of the config).
  """
  try:
    config = _CONFIG.value
    config.get("method")  # The stand-in of a file that failed raises here.
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise errors.UserError(f"--config: {_last_line(e)}") from e
  return config


def _last_line(e: BaseException) -> str:
  """The last line of `e`'s message, where ml_collections puts the error of
  a config file that failed to load (above it: the attempts, or the
  traceback as text), without the module path of ugrad's own errors."""
  lines = str(e).strip().splitlines() or [type(e).__name__]
  return re.sub(r"^ugrad\.errors\.\w+: ", "", lines[-1].strip())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  host_memory.keep_freed_memory()
  compile_cache.enable()
  try:
    config = load_config()
    distributed.initialize(
        _COORDINATOR.value,
        _NUM_PROCESSES.value,
        _PROCESS_ID.value,
        auto=_DISTRIBUTED.value,
    )
    run(
        config,
        _WORKDIR.value,
        allow_config_change=_ALLOW_CONFIG_CHANGE.value,
        break_lock=_BREAK_LOCK.value,
    )
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except Exception as e:  # pylint: disable=broad-exception-caught
    if not is_user_error(e) or _show_traceback():
      raise
    print(
        error_line(e) + "  (--traceback shows where)",
        file=sys.stderr,
        flush=True,
    )
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
      message = (
          f"the config has no field {field!r}; check the "
          "--config.* overrides"
      )
    elif "Error whilst parsing config file" in str(e):  # get_config raised.
      message = f"--config: {_last_line(e)}"
    print(
        f"error: {message}  (--traceback shows where)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(EXIT_ERROR)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
