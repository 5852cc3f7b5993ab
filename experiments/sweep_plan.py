"""Plans a sweep's runs: the config of every run x seed, built and checked.

`experiments.sweep` trains what `plan` lists: per seed, the SFT warm start
(experiments/configs/sft.py) and then every run of the sweep file from it,
each config with the sweep's shared and per-part ("sft", "rl", "rm")
overrides, `init_from` (the seed's SFT policy, unless the run's own
overrides set it: "" trains from scratch, "{run:<name>}" starts from
another run), its own overrides ("{run:<name>}" resolved to that seed's run
directory, see `run_dir`) and the seed, shrunk for --smoke, and
validated before anything trains. `run_trainers` tells policy runs from
reward-model runs (`policy_names`, `reward_model_names`).
"""

import os
from typing import Any

from experiments import sweep_file
from experiments import sweep_report as report
from ugrad.training import reward_models
from ugrad.training import validate

SFT_CONFIG = "experiments/configs/sft.py"
SFT_NAME = report.SFT_NAME  # the shared warm start's run name
POLICY, REWARD_MODEL = "policy", "reward_model"


def run_dir(workdir: str, name: str, seed: int) -> str:
  if name == SFT_NAME:
    return os.path.join(workdir, f"sft_seed_{seed}")
  return os.path.join(workdir, name, f"seed_{seed}")


def run_trainers(sweep: dict) -> dict[str, str]:
  """Run name -> its config's trainer ("policy" or "reward_model"), the
  SFT first."""
  trainers = {SFT_NAME: POLICY}
  for run in sweep["runs"]:
    trainers[run["name"]] = run["overrides"].get(
        "trainer", sweep_file.load_config(run["config"]).trainer
    )
  return trainers


def policy_names(sweep: dict) -> list[str]:
  """The SFT and the policy runs: the methods with a greedy accuracy."""
  return [n for n, t in run_trainers(sweep).items() if t == POLICY]


def reward_model_names(sweep: dict) -> list[str]:
  return [n for n, t in run_trainers(sweep).items() if t == REWARD_MODEL]


def _resolve_references(overrides: dict, workdir: str, seed: int) -> dict:
  """`overrides` with every "{run:<name>}" replaced by that seed's absolute
  run directory."""

  def replace(match):
    return os.path.abspath(run_dir(workdir, match.group(1), seed))

  return {
      k: sweep_file.REFERENCE.sub(replace, v) if isinstance(v, str) else v
      for k, v in overrides.items()
  }


def _validate(config, run: dict):
  """Checks a run's config before anything trains.

  A reward model's own checks may read the runs it refers to (rm.init_from),
  which do not exist before the sweep trains them; those checks then wait
  for the run itself (its trainer validates again).
  """
  validate.check_config(config)
  if config.trainer == REWARD_MODEL and not any(
      sweep_file.references(v) for v in run["overrides"].values()
  ):
    reward_models.check_config(config)


def plan(sweep: dict, workdir: str) -> list[tuple[str, int, Any]]:
  """(name, seed, config) of every run in order: per seed, the SFT first.

  Every config is built and validated here, before anything trains.
  Reward-model runs take the sweep's "rm" overrides, policy runs its "rl";
  a --smoke sweep then shrinks each config (`sweep_file.smoke_config`).
  """
  jobs = []
  trainers = run_trainers(sweep)
  smoke = sweep.get(sweep_file.SMOKE_KEY, False)
  for seed in sweep["seeds"]:
    sft = sweep_file.load_config(SFT_CONFIG)
    where = f"{SFT_NAME} (seed {seed})"
    sweep_file.apply_overrides(
        sft, {**sweep["shared"], **sweep["sft"], "seed": seed}, where
    )
    if smoke:
      sweep_file.smoke_config(sft, sft=True)
    validate.check_config(sft)
    jobs.append((SFT_NAME, seed, sft))
    for run in sweep["runs"]:
      config = sweep_file.load_config(run["config"])
      where = f"run {run['name']!r} ({run['config']}, seed {seed})"
      part = "rm" if trainers[run["name"]] == REWARD_MODEL else "rl"
      init_from = os.path.abspath(run_dir(workdir, SFT_NAME, seed))
      overrides = _resolve_references(run["overrides"], workdir, seed)
      sweep_file.apply_overrides(
          config,
          {
              **sweep["shared"],
              **sweep.get(part, {}),
              "init_from": init_from,
              **overrides,
              "seed": seed,
          },
          where,
      )
      if smoke:
        sweep_file.smoke_config(config, sft=False)
      _validate(config, run)
      jobs.append((run["name"], seed, config))
  return jobs
