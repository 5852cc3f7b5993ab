r"""Runs an ablation sweep: methods x seeds from one SFT policy per seed.

  python -m experiments.sweep --sweep=experiments/sweeps/followups.py \
      --workdir=runs/followups [--profile=quick] [--smoke]

A sweep file (see `experiments/sweeps/__init__.py`) lists runs, seeds and
overrides. For each seed the SFT policy is trained once in
WORKDIR/sft_seed_<s> (experiments/configs/sft.py) and every RL run of that
seed starts from it (`init_from`), so runs differ only in the method. Each
run trains in WORKDIR/<name>/seed_<s> through `experiments.main.run`; a run
whose eval.json exists is skipped, a run with a checkpoint resumes. Then:

* WORKDIR/results.csv: one row per run x seed x evaluation step.
* WORKDIR/report.md: final greedy accuracy per method, mean over seeds with a
  95% t-interval over seeds, and the paired gain over the SFT baseline.
* WORKDIR/accuracy.png, WORKDIR/response_length.png: mean over seeds
  against steps, one line per method, a 95% t-interval band.

`--smoke` shrinks every run to seconds (tiny model, 2 steps, one seed).
"""

import csv
import importlib
import importlib.util
import json
import math
import os
import time
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from ugrad import metrics as metrics_lib
from ugrad import train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_CONFIG = "experiments/configs/sft.py"
SFT_NAME = "sft"
RESULTS_FILE = "results.csv"
REPORT_FILE = "report.md"
SWEEP_FILE = "sweep.json"
PLOTS = {"accuracy.png": ("greedy_acc", "held-out greedy accuracy"),
         "response_length.png": ("response_length",
                                 "mean response length (tokens)")}
# Means over the training steps since the previous evaluation.
WINDOW_KEYS = ("response_length", "reward_mean", "accuracy", "kl")
COLUMNS = ("name", "seed", "step", "greedy_acc", "greedy_acc_lo",
           "greedy_acc_hi") + WINDOW_KEYS
_SWEEP_KEYS = {"runs", "seeds", "shared", "sft", "rl"}
_RUN_KEYS = {"name", "config", "overrides"}

# --smoke: seconds per run on a CPU, one seed; applied after the profile.
SMOKE = {
    "shared": {"model": "tiny", "sampling.questions": 4,
               "sampling.group_size": 4, "sampling.pool_questions": 8,
               "warm_start.steps": 2, "eval_questions": 8, "quiet": True},
    "sft": {"steps": 2, "batch_size": 16},
    "rl": {"steps": 2, "eval_every": 1, "checkpoint_every": 1},
}


# ---------------------------------------------------------------------------
# Loading sweeps and configs.
# ---------------------------------------------------------------------------


def _resolve(path: str) -> str:
  """`path` as given, or relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(_REPO, path)


def _load_module(path: str, kind: str):
  resolved = _resolve(path)
  if not os.path.isfile(resolved):
    raise FileNotFoundError(f"{kind} file {path!r} does not exist")
  name = "_sweep_" + os.path.splitext(os.path.basename(resolved))[0]
  spec = importlib.util.spec_from_file_location(name, resolved)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(path: str, profile: str = "quick",
               smoke: bool = False) -> dict:
  """The sweep of file `path` for `profile`, checked; shrunk by `smoke`.

  Raises:
    ValueError: for an unknown profile or a malformed sweep.
  """
  module = _load_module(path, "sweep")
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"sweep file {path} defines no get_sweep(profile)")
  sweep = module.get_sweep(profile)
  _check_sweep(path, sweep)
  if smoke:
    sweep["seeds"] = sweep["seeds"][:1]
    for part, overrides in SMOKE.items():
      sweep[part] = {**sweep[part], **overrides}
  return sweep


def _check_sweep(path: str, sweep: Any):
  if not isinstance(sweep, dict) or set(sweep) != _SWEEP_KEYS:
    got = sorted(sweep) if isinstance(sweep, dict) else type(sweep).__name__
    raise ValueError(f"{path}: get_sweep must return a dict with keys "
                     f"{sorted(_SWEEP_KEYS)}, got {got}")
  seeds = sweep["seeds"]
  if not seeds or not all(isinstance(s, int) for s in seeds) or (
      len(set(seeds)) != len(seeds)):
    raise ValueError(f"{path}: seeds must be distinct ints, got {seeds!r}")
  names = []
  for run in sweep["runs"]:
    if not isinstance(run, dict) or set(run) != _RUN_KEYS:
      raise ValueError(f"{path}: each run must be a dict with keys "
                       f"{sorted(_RUN_KEYS)}, got {run!r}")
    names.append(run["name"])
  if not names or len(set(names)) != len(names) or SFT_NAME in names:
    raise ValueError(f"{path}: run names must be distinct and not "
                     f"{SFT_NAME!r} (the shared warm start), got {names}")


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, locked so new fields are refused."""
  config = _load_module(path, "config").get_config()
  config.lock()
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict,
                    where: str):
  """Sets dotted fields (`{"coef.beta": 0.0}`) of a locked config in place.

  Raises:
    ValueError: naming `where` and the key, for a field the config lacks or
      a value of the wrong type.
  """
  for key, value in overrides.items():
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        valid = (", ".join(sorted(node.keys()))
                 if isinstance(node, ml_collections.ConfigDict) else "none")
        raise ValueError(
            f"{where}: override {key!r}: {'.'.join(parts[:i + 1])!r} is not a "
            f"config field (valid here: {valid})")
      if i < len(parts) - 1:
        node = node[part]
    try:
      setattr(node, parts[-1], value)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where}: override {key}={value!r}: {e}") from None


def run_dir(workdir: str, name: str, seed: int) -> str:
  if name == SFT_NAME:
    return os.path.join(workdir, f"sft_seed_{seed}")
  return os.path.join(workdir, name, f"seed_{seed}")


def plan(sweep: dict, workdir: str) -> list[tuple[str, int, Any]]:
  """(name, seed, config) of every run in order: per seed, the SFT first.

  Every config is built and validated here, before anything trains.
  """
  jobs = []
  for seed in sweep["seeds"]:
    sft = load_config(SFT_CONFIG)
    where = f"{SFT_NAME} (seed {seed})"
    apply_overrides(sft, {**sweep["shared"], **sweep["sft"], "seed": seed},
                    where)
    train.validate(sft)
    jobs.append((SFT_NAME, seed, sft))
    for run in sweep["runs"]:
      config = load_config(run["config"])
      where = f"run {run['name']!r} ({run['config']}, seed {seed})"
      init_from = os.path.abspath(run_dir(workdir, SFT_NAME, seed))
      apply_overrides(config, {**sweep["shared"], **sweep["rl"],
                               **run["overrides"], "seed": seed,
                               "init_from": init_from}, where)
      train.validate(config)
      jobs.append((run["name"], seed, config))
  return jobs


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
      raise ValueError(f"{workdir} holds the sweep {before}, not {identity}: "
                       "use another workdir")
  else:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(identity, f, indent=2)


def run_sweep(sweep_path: str, workdir: str, profile: str = "quick",
              smoke: bool = False) -> dict:
  """Trains every unfinished run of a sweep, then writes the outputs.

  Returns:
    The report's summary: method name -> statistics of its final accuracy.
  """
  sweep = load_sweep(sweep_path, profile, smoke)
  jobs = plan(sweep, workdir)
  _check_workdir(workdir, {"sweep": os.path.basename(sweep_path),
                           "profile": profile, "smoke": smoke})
  for i, (name, seed, config) in enumerate(jobs, 1):
    directory = run_dir(workdir, name, seed)
    label = f"[{i}/{len(jobs)}] {name} seed {seed}"
    if os.path.exists(os.path.join(directory, "eval.json")):
      print(f"{label}: finished, skipped", flush=True)
      continue
    print(f"{label}: training in {directory}", flush=True)
    start = time.perf_counter()
    _launcher().run(config, directory)
    print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
  return write_outputs(sweep, workdir)


# ---------------------------------------------------------------------------
# Results, report and plots.
# ---------------------------------------------------------------------------


def _method_names(sweep: dict) -> list[str]:
  return [SFT_NAME] + [run["name"] for run in sweep["runs"]]


def run_rows(directory: str, name: str, seed: int) -> list[dict]:
  """results.csv rows of one finished run: one per evaluation step.

  Window metrics are means over the training steps since the previous row;
  the final evaluation (eval.json) is a row when no periodic one was at the
  last step.
  """
  records = metrics_lib.read_metrics(
      os.path.join(directory, metrics_lib.METRICS_FILE))
  with open(os.path.join(directory, "eval.json")) as f:
    final = json.load(f)["final"]
  rows, window = [], []
  for i, record in enumerate(records):
    window.append(record)
    last = i == len(records) - 1
    if "greedy_acc" not in record and not last:
      continue
    if "greedy_acc" not in record:
      lo, hi = final["greedy_acc_ci"]
      record = dict(record, greedy_acc=final["greedy_acc"],
                    greedy_acc_lo=lo, greedy_acc_hi=hi)
    row = {"name": name, "seed": seed, "step": record["step"]}
    row.update({k: record[k] for k in COLUMNS[3:6]})
    for key in WINDOW_KEYS:
      values = [r[key] for r in window if key in r]
      row[key] = float(np.mean(values)) if values else ""
    rows.append(row)
    window = []
  return rows


def write_outputs(sweep: dict, workdir: str) -> dict:
  """Writes results.csv, report.md and the plots; returns the summary."""
  rows = []
  for name in _method_names(sweep):
    for seed in sweep["seeds"]:
      rows.extend(run_rows(run_dir(workdir, name, seed), name, seed))
  with open(os.path.join(workdir, RESULTS_FILE), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  summary = summarize(sweep, workdir)
  with open(os.path.join(workdir, REPORT_FILE), "w") as f:
    f.write(report(sweep, summary))
  for filename, (key, label) in PLOTS.items():
    plot(rows, _method_names(sweep), key, label,
         os.path.join(workdir, filename))
  return summary


def t_interval(values, confidence: float = 0.95
               ) -> tuple[float, Optional[float], Optional[float]]:
  """(mean, low, high) of Student's t-interval; bounds None for one value."""
  # Imported here: scipy (a JAX dependency) is needed only by reports.
  from scipy import stats  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, dtype=np.float64)
  mean = float(values.mean())
  if values.size < 2:
    return mean, None, None
  half = stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(
      ddof=1) / math.sqrt(values.size)
  return mean, mean - float(half), mean + float(half)


def _final_accuracy(workdir: str, name: str, seed: int) -> float:
  with open(os.path.join(run_dir(workdir, name, seed), "eval.json")) as f:
    return json.load(f)["final"]["greedy_acc"]


def summarize(sweep: dict, workdir: str) -> dict:
  """Per method: per-seed final accuracies, their t-interval, and the
  t-interval of the paired gain over the same seed's SFT policy."""
  seeds = sweep["seeds"]
  sft = [_final_accuracy(workdir, SFT_NAME, s) for s in seeds]
  summary = {}
  for name in _method_names(sweep):
    accs = [_final_accuracy(workdir, name, s) for s in seeds]
    gains = [a - b for a, b in zip(accs, sft)]
    summary[name] = {"seeds": seeds, "acc": accs,
                     "acc_ci": t_interval(accs), "gain_ci": t_interval(gains)}
  return summary


def _pct(mean, lo=None, hi=None) -> str:
  if lo is None:
    return f"{100 * mean:.1f}"
  return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def report(sweep: dict, summary: dict) -> str:
  """The markdown report: one row per method, the SFT baseline first."""
  n = len(sweep["seeds"])
  lines = [
      "# Sweep report", "",
      f"Final held-out greedy accuracy (%), mean over {n} seed(s) "
      f"{sweep['seeds']}. Brackets: 95% Student t-interval over seeds "
      "(t quantile with n-1 degrees of freedom; none with one seed). "
      "Gain: the paired difference from the same seed's SFT policy, which "
      "every RL run starts from.", "",
      "| method | accuracy | gain over SFT | per seed |",
      "|---|---|---|---|"]
  for name, s in summary.items():
    gain = "(baseline)" if name == SFT_NAME else _pct(*s["gain_ci"])
    per_seed = ", ".join(f"{100 * a:.1f}" for a in s["acc"])
    label = "SFT (no RL)" if name == SFT_NAME else name
    lines.append(f"| {label} | {_pct(*s['acc_ci'])} | {gain} | {per_seed} |")
  return "\n".join(lines) + "\n"


def _curve(rows: list[dict], name: str, key: str):
  """Steps, mean over seeds and t-interval band of one method's `key`."""
  by_step = {}
  for row in rows:
    if row["name"] == name and row[key] != "":
      by_step.setdefault(row["step"], []).append(row[key])
  steps = sorted(by_step)
  stats = [t_interval(by_step[s]) for s in steps]
  mean = np.array([m for m, _, _ in stats])
  lo = np.array([m if l is None else l for m, l, _ in stats])
  hi = np.array([m if h is None else h for m, _, h in stats])
  return np.array(steps), mean, lo, hi


def plot(rows: list[dict], names: list[str], key: str, label: str,
         path: str):
  """One line per method (mean over seeds) with its 95% band; the SFT run
  is a horizontal line (for response length: its gold training data)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name in names:
    steps, mean, lo, hi = _curve(rows, name, key)
    if not steps.size:
      continue
    if name == SFT_NAME:
      sft_label = ("SFT data (gold solutions)" if key in WINDOW_KEYS
                   else "SFT (no RL)")
      ax.axhline(mean[-1], color="black", linestyle="--", label=sft_label)
      ax.axhspan(lo[-1], hi[-1], color="black", alpha=0.08)
      continue
    (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("RL step")
  ax.set_ylabel(label)
  ax.set_title(f"{label}: mean over seeds, 95% t-interval band")
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------

# The sweep's own flag set: experiments.main defines a global --workdir and a
# required --config, which `python -m experiments.sweep` must not inherit.
_FLAGS = flags.FlagValues()
flags.DEFINE_string("sweep", None, "Path to a sweep file.", flag_values=_FLAGS)
flags.DEFINE_string("workdir", None, "Sweep directory.", flag_values=_FLAGS)
flags.DEFINE_string("profile", "quick", "Sweep profile: quick (CPU) or full.",
                    flag_values=_FLAGS)
flags.DEFINE_bool("smoke", False,
                  "Shrink every run to seconds (tiny model, one seed).",
                  flag_values=_FLAGS)


def _launcher():
  """experiments.main, imported only after the command line is parsed so
  its required --config does not apply to the sweep's command line."""
  return importlib.import_module("experiments.main")


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
  summary = run_sweep(_FLAGS.sweep, _FLAGS.workdir, _FLAGS.profile,
                      _FLAGS.smoke)
  seeds = summary[SFT_NAME]["seeds"]
  print(report({"seeds": seeds}, summary), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
