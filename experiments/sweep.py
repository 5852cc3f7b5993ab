r"""Runs an ablation sweep: methods x seeds from one SFT policy per seed.

  python -m experiments.sweep --sweep=experiments/sweeps/followups.py \
      --workdir=runs/followups [--profile=quick] [--smoke] [--seeds=0,1]

A sweep file (see `experiments/sweeps/__init__.py`, read and checked by
`experiments.sweep_file`) lists runs, seeds and overrides; `--seeds`
replaces its seeds. For each seed the SFT policy is trained once in
WORKDIR/sft_seed_<s> (experiments/configs/sft.py) and every run of that seed
starts from it (`init_from`), so runs differ only in the method. A run may be
a reward model (`config.trainer == "reward_model"`, e.g. orm.py), trained on
samples of that SFT policy; a later run of the same seed names it with the
override value "{run:<name>}". Each run trains in WORKDIR/<name>/seed_<s>
through `experiments.main.run`; a run whose eval.json exists is skipped, a
run with a checkpoint resumes. Then, when the sweep has an "evaluate" part,
the SFT and every policy run are sampled (pass@k and maj@k, RUN/eval_k.json,
skipped when present). Then it writes the results, and
`experiments.sweep_report` the report and the plots:

* WORKDIR/results.csv: one row per policy run x seed x evaluation step.
* WORKDIR/report.md: final greedy accuracy per method, mean over seeds with a
  95% t-interval over seeds, and the paired gain over the SFT baseline; the
  reward models' held-out metrics; pass@k and maj@k per k with their paired
  gains over SFT.
* WORKDIR/accuracy.png, WORKDIR/response_length.png: mean over seeds
  against steps, one line per method, a 95% t-interval band.
* With "evaluate": WORKDIR/sampled_eval.csv (one row per run x seed x k) and
  WORKDIR/pass_maj_at_k.png (pass@k and maj@k against k).

`--smoke` shrinks every run to seconds (one seed; each run's config the
`tiny` variant of experiments/configs/base.py, over the sweep's overrides).
"""

import csv
import importlib
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import sweep_report as report
from experiments import sweep_file
from experiments import sweep_plan
from experiments import tune
from experiments.configs import base
from ugrad import errors
from ugrad.runtime import compile_cache
from ugrad.runtime import host_memory
from ugrad.runtime import lock
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import config_identity
from ugrad.training import runs as runs_lib

RESULTS_FILE = "results.csv"
SWEEP_FILE = "sweep.json"
SAMPLED_FILE = "sampled_eval.csv"
EVAL_K_FILE = "eval_k.json"  # experiments.evaluate.OUTPUT_FILE
COLUMNS = (
    "name",
    "seed",
    "step",
    "greedy_acc",
    "greedy_acc_lo",
    "greedy_acc_hi",
) + report.WINDOW_KEYS
SAMPLED_COLUMNS = ("name", "seed", "k", "pass_at_k", "maj_at_k")


# ---------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------


def _check_workdir(workdir: str, identity: dict):
  """Refuses to mix two sweeps, profiles or smoke modes in one workdir."""
  path = os.path.join(workdir, SWEEP_FILE)
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    if before != identity:
      raise errors.UserError(
          f"{workdir} holds the sweep {before}, not {identity}: "
          "use another workdir"
      )
  else:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(identity, f, indent=2)


def run_sweep(
    sweep_path: str,
    workdir: str,
    profile: str = "quick",
    smoke: bool = False,
    seeds: list[int] | None = None,
) -> dict:
  """Trains every unfinished run of a sweep, samples the policies when the
  sweep has an "evaluate" part, then writes the outputs.

  Returns:
    The report's summary: method name -> statistics of its final accuracy.
  """
  sweep = sweep_file.load_sweep(sweep_path, profile, smoke, seeds)
  # Every config is checked before any training.
  jobs = sweep_plan.plan(sweep, workdir)
  tune_dir = os.path.join(workdir, tune.TUNE_DIR)
  tune_jobs = (
      sweep_plan.plan(tune.tuning_sweep(sweep), tune_dir)
      if ("tune" in sweep)
      else []
  )
  _check_workdir(
      workdir,
      {
          "sweep": os.path.basename(sweep_path),
          "profile": profile,
          "smoke": smoke,
      },
  )
  tune_rows = None
  if tune_jobs:
    if _train(tune_jobs, tune_dir, "tuning "):
      return {}
    choices, tune_rows = tune.pick(
        sweep,
        lambda name: _final(
            sweep_plan.run_dir(tune_dir, name, sweep["tune"]["seed"])
        ),
    )
    sweep = tune.apply(sweep, choices)
    jobs = sweep_plan.plan(sweep, workdir)
  if _train(jobs, workdir):
    return {}
  if "evaluate" in sweep:
    evaluate_runs(sweep, workdir)
  summary = write_outputs(sweep, workdir)
  if tune_rows is not None:
    tune.write(workdir, sweep["tune"]["seed"], tune_rows, summary)
  return summary


# Paths the sweep derives from its workdir (a moved workdir keeps its runs),
# and keys that do not change what a run computes (a run profiled or
# trained quietly is the same run; no run of a sweep trains its own warm
# start: its SFT runs hold those settings in steps and optim, its RL runs
# start from them). A key added to the configs since the run finished is
# no change while off or at its default (`config_changes`).
_IGNORED_KEYS = (
    "init_from",
    "reward_model",
    "process_reward_model",
    "teacher",
    "profile_steps",
    "quiet",
    "warm_start.",
)


def _check_same_config(directory: str, config):
  """Refuses to reuse a finished run that the sweep now configures
  differently (an edited sweep file or grid), naming the keys."""
  changed = list(
      config_identity.config_changes(
          runs_lib.read_config(directory).to_json(),
          config,
          _IGNORED_KEYS,
          defaults=base.get_config(),
      )
  )
  if changed:
    raise errors.UserError(
        f"{directory} finished with another config than the sweep now gives "
        f"it (different: {', '.join(changed)}); move it away to train it "
        "again, or restore the sweep file"
    )


def _train(jobs: list, workdir: str, what: str = "") -> list[str]:
  """Trains the unfinished runs of `jobs`; the directories skipped because
  another process holds them."""
  held = []
  for i, (name, seed, config) in enumerate(jobs, 1):
    directory = sweep_plan.run_dir(workdir, name, seed)
    label = f"{what}[{i}/{len(jobs)}] {name} seed {seed}"
    if os.path.exists(os.path.join(directory, "eval.json")):
      _check_same_config(directory, config)
      print(f"{label}: finished, skipped", flush=True)
      continue
    print(f"{label}: training in {directory}", flush=True)
    start = time.perf_counter()
    try:
      _launcher().run(config, directory)
    except lock.WorkdirInUse as e:
      print(f"{label}: skipped, {e}", flush=True)
      held.append(directory)
      continue
    print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
  if held:
    print(
        f"{len(held)} run(s) are held by other processes; run the sweep "
        "again once they finish to write its results",
        flush=True,
    )
  return held


# ---------------------------------------------------------------------------
# Sampled evaluation: pass@k and maj@k of every policy.
# ---------------------------------------------------------------------------


def _check_eval_k(path: str, result: dict, settings: dict, seed: int):
  """Refuses an eval_k.json made with other settings than the sweep's."""
  got = {
      "ks": result.get("ks"),
      "questions": result.get("questions"),
      "temperature": result.get("temperature"),
      "seed": result.get("seed"),
  }
  want = dict(settings, seed=seed)
  if got != want:
    raise errors.UserError(
        f"{path} was sampled with {got}, not the sweep's "
        f"{want}: delete it to sample again"
    )


def evaluate_runs(sweep: dict, workdir: str):
  """Samples the final policy of the SFT and of every policy run x seed
  (pass@k and maj@k) into RUN/eval_k.json; a run that has one is skipped.

  The samples of a run are seeded by its seed, so a rerun is identical.
  """
  settings = report.evaluate_settings(sweep)
  names = sweep_plan.policy_names(sweep)
  jobs = [(n, s) for n in names for s in sweep["seeds"]]
  for i, (name, seed) in enumerate(jobs, 1):
    path = os.path.join(sweep_plan.run_dir(workdir, name, seed), EVAL_K_FILE)
    label = f"[sampled {i}/{len(jobs)}] {name} seed {seed}"
    if os.path.exists(path):
      with open(path) as f:
        _check_eval_k(path, json.load(f), settings, seed)
      print(f"{label}: finished, skipped", flush=True)
      continue
    start = time.perf_counter()
    evaluator = _evaluator()
    result = evaluator.evaluate(
        os.path.dirname(path),
        settings["ks"],
        settings["questions"],
        temperature=settings["temperature"],
        seed=seed,
    )
    evaluator.write_json(dict(result, questions=settings["questions"]), path)
    print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)


def sampled_rows(sweep: dict, workdir: str) -> list[dict]:
  """sampled_eval.csv rows: one per policy x seed x k."""
  rows = []
  for name in sweep_plan.policy_names(sweep):
    for seed in sweep["seeds"]:
      with open(
          os.path.join(sweep_plan.run_dir(workdir, name, seed), EVAL_K_FILE)
      ) as f:
        result = json.load(f)
      for k in result["ks"]:
        rows.append(
            {
                "name": name,
                "seed": seed,
                "k": k,
                "pass_at_k": result[f"pass@{k}"],
                "maj_at_k": result[f"maj@{k}"],
            }
        )
  return rows


# ---------------------------------------------------------------------------
# Results: results.csv and sampled_eval.csv (experiments.sweep_report
# reports them).
# ---------------------------------------------------------------------------


def run_rows(directory: str, name: str, seed: int) -> list[dict]:
  """results.csv rows of one finished run: one per evaluation step.

  Window metrics are means over the training steps since the previous row;
  the final evaluation (eval.json) is a row when no periodic one was at the
  last step.
  """
  records = metrics_lib.read_metrics(
      os.path.join(directory, metrics_lib.METRICS_FILE)
  )
  final = _final(directory)
  rows, window = [], []
  for i, record in enumerate(records):
    window.append(record)
    last = i == len(records) - 1
    if "greedy_acc" not in record and not last:
      continue
    if "greedy_acc" not in record:
      lo, hi = final["greedy_acc_ci"]
      record = dict(
          record,
          greedy_acc=final["greedy_acc"],
          greedy_acc_lo=lo,
          greedy_acc_hi=hi,
      )
    row = {"name": name, "seed": seed, "step": record["step"]}
    row.update({k: record[k] for k in COLUMNS[3:6]})
    for key in report.WINDOW_KEYS:
      values = [r[key] for r in window if key in r]
      row[key] = float(np.mean(values)) if values else ""
    rows.append(row)
    window = []
  return rows


def _write_csv(path: str, columns, rows: list[dict]):
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def write_outputs(sweep: dict, workdir: str) -> dict:
  """Writes results.csv (and, for a sweep with "evaluate", sampled_eval.csv),
  then report.md and the plots through `report.write_report`; returns the
  report's summary."""
  names = sweep_plan.policy_names(sweep)
  rows = []
  for name in names:
    for seed in sweep["seeds"]:
      rows.extend(run_rows(sweep_plan.run_dir(workdir, name, seed), name, seed))
  _write_csv(os.path.join(workdir, RESULTS_FILE), COLUMNS, rows)
  policy_finals = final_evaluations(sweep, workdir, names)
  reward_model_finals = final_evaluations(
      sweep, workdir, sweep_plan.reward_model_names(sweep)
  )
  sampled_table = None
  if "evaluate" in sweep:
    sampled_table = sampled_rows(sweep, workdir)
    _write_csv(
        os.path.join(workdir, SAMPLED_FILE), SAMPLED_COLUMNS, sampled_table
    )
  return report.write_report(
      sweep, workdir, rows, policy_finals, reward_model_finals, sampled_table
  )


def _final(directory: str) -> dict:
  """The final evaluation of a finished run (its eval.json "final")."""
  with open(os.path.join(directory, "eval.json")) as f:
    return json.load(f)["final"]


def final_evaluations(
    sweep: dict, workdir: str, names: list[str]
) -> dict[str, list[dict]]:
  """Run name -> the final evaluation of each of its seeds, in order."""
  return {
      name: [
          _final(sweep_plan.run_dir(workdir, name, s)) for s in sweep["seeds"]
      ]
      for name in names
  }


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------

# The sweep's own flag set: experiments.main defines a global --workdir and a
# required --config, which `python -m experiments.sweep` must not inherit.
_FLAGS = flags.FlagValues()
flags.DEFINE_string("sweep", None, "Path to a sweep file.", flag_values=_FLAGS)
flags.DEFINE_string("workdir", None, "Sweep directory.", flag_values=_FLAGS)
flags.DEFINE_string(
    "profile",
    "quick",
    "Sweep profile: quick (CPU) or full.",
    flag_values=_FLAGS,
)
flags.DEFINE_bool(
    "smoke",
    False,
    "Shrink every run to seconds (tiny model, one seed).",
    flag_values=_FLAGS,
)
flags.DEFINE_list(
    "seeds",
    None,
    "Seeds to run instead of the sweep's own (e.g. 0 to start "
    "with one, or 0,1,2,3,4 to add seeds to a finished sweep).",
    flag_values=_FLAGS,
)


def _launcher():
  """experiments.main, imported only after the command line is parsed so
  its required --config does not apply to the sweep's command line."""
  return importlib.import_module("experiments.main")


def _evaluator():
  """experiments.evaluate, imported late for the same reason (its required
  --checkpoint)."""
  return importlib.import_module("experiments.evaluate")


def _parse_flags(argv: list[str]) -> list[str]:
  rest = _FLAGS(argv, known_only=True)
  for name in ("sweep", "workdir"):
    if _FLAGS[name].value is None:
      raise app.UsageError(f"--{name} is required\n{_FLAGS}")
  return flags.FLAGS(rest)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  host_memory.keep_freed_memory()
  compile_cache.enable()
  seeds = None if _FLAGS.seeds is None else [int(s) for s in _FLAGS.seeds]
  run_sweep(_FLAGS.sweep, _FLAGS.workdir, _FLAGS.profile, _FLAGS.smoke, seeds)
  with open(os.path.join(_FLAGS.workdir, report.REPORT_FILE)) as f:
    print(f.read(), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
