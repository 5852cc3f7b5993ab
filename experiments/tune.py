"""Per-method tuning on the validation split: a sweep's optional "tune" part.

  "tune": {"seed": 0,
           "grid": {"dpo": {"optim.lr": [3e-5, 1e-4, 3e-4],
                            "coef.beta": [0.05, 0.1, 0.3]},
                    "grpo": {"optim.lr": [3e-5, 1e-4, 3e-4]}}}

Before the sweep's own runs, every setting of each named run's grid (the
product of its value lists) trains once, on the tune seed, in
WORKDIR/tune/, and is evaluated on the validation split (`eval_split`),
never on the test split. The setting with the best final validation greedy
accuracy (the first on ties) becomes that run's overrides for the test
seeds. WORKDIR/tune.csv holds the grid, the scores and the picks, and the
report gains a section with them. The sweep's "shared" part must reserve a
validation split (`task_kwargs.val_fraction` or `data.validation_path`);
its test runs then train without those questions too.
"""

import csv
import itertools
import json
import os
from typing import Any

from ugrad import errors

TUNE_DIR = "tune"
TUNE_FILE = "tune.csv"
COLUMNS = ("name", "setting", "overrides", "validation_acc", "chosen")


def check(path: str, sweep: dict):
  """Refuses a malformed "tune" part, naming the problem."""
  spec = sweep["tune"]
  if (
      not isinstance(spec, dict)
      or set(spec) != {"seed", "grid"}
      or (not isinstance(spec["seed"], int))
      or not isinstance(spec["grid"], dict)
  ):
    raise errors.UserError(
        f"{path}: 'tune' must be a dict {{'seed': int, 'grid': "
        f"{{run name: {{key: [values]}}}}}}, got {spec!r}"
    )
  names = {run["name"]: run for run in sweep["runs"]}
  for name, grid in spec["grid"].items():
    if name not in names:
      raise errors.UserError(
          f"{path}: tune grid names run {name!r}; valid: " f"{', '.join(names)}"
      )
    if (
        not isinstance(grid, dict)
        or not grid
        or not all(isinstance(v, (list, tuple)) and v for v in grid.values())
    ):
      raise errors.UserError(
          f"{path}: tune grid of {name!r} must map keys to "
          f"non-empty lists of values, got {grid!r}"
      )
    if any("{run:" in str(v) for v in names[name]["overrides"].values()):
      raise errors.UserError(
          f"{path}: run {name!r} refers to other runs and "
          "cannot be tuned alone"
      )
  shared = sweep["shared"]
  if not (
      shared.get("task_kwargs.val_fraction")
      or shared.get("data.validation_path")
  ):
    raise errors.UserError(
        f"{path}: tuning needs a validation split: set "
        "task_kwargs.val_fraction (or data.validation_path) in "
        "the 'shared' part"
    )


def settings(grid: dict) -> list[dict]:
  """Every combination of a grid's values, keys in sorted order."""
  keys = sorted(grid)
  return [
      dict(zip(keys, values))
      for values in itertools.product(*(grid[k] for k in keys))
  ]


def setting_name(name: str, i: int) -> str:
  return f"{name}_tune{i}"


def tuning_sweep(sweep: dict) -> dict:
  """The sweep of the tuning runs: one run per setting, on the tune seed,
  evaluated on the validation split."""
  grid = sweep["tune"]["grid"]
  runs = []
  for run in (r for r in sweep["runs"] if r["name"] in grid):
    for i, setting in enumerate(settings(grid[run["name"]])):
      runs.append(
          {
              "name": setting_name(run["name"], i),
              "config": run["config"],
              "overrides": {
                  **run["overrides"],
                  **setting,
                  "eval_split": "validation",
              },
          }
      )
  out = {k: v for k, v in sweep.items() if k not in ("tune", "evaluate")}
  return dict(out, seeds=[sweep["tune"]["seed"]], runs=runs)


def pick(sweep: dict, final_of) -> tuple[dict, list[dict]]:
  """The chosen setting of each tuned run, and the tune.csv rows.

  Args:
    sweep: the sweep (with its "tune" part).
    final_of: tuning run name -> its final evaluation (greedy_acc on the
      validation split).
  """
  choices, rows = {}, []
  for name, grid in sweep["tune"]["grid"].items():
    scored = [
        (final_of(setting_name(name, i))["greedy_acc"], i, setting)
        for i, setting in enumerate(settings(grid))
    ]
    best = max(scored, key=lambda s: (s[0], -s[1]))
    choices[name] = best[2]
    rows += [
        {
            "name": name,
            "setting": i,
            "overrides": json.dumps(setting),
            "validation_acc": acc,
            "chosen": int(i == best[1]),
        }
        for acc, i, setting in scored
    ]
  return choices, rows


def apply(sweep: dict, choices: dict) -> dict:
  """The sweep whose tuned runs carry their chosen settings."""
  runs = [
      dict(run, overrides={**run["overrides"], **choices.get(run["name"], {})})
      for run in sweep["runs"]
  ]
  return dict(sweep, runs=runs)


def write(workdir: str, seed: int, rows: list[dict], summary: dict[str, Any]):
  """tune.csv, and a section appended to report.md with each pick's test
  result (`summary`: run name -> the report's statistics)."""
  with open(os.path.join(workdir, TUNE_FILE), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  lines = [
      "",
      f"## Tuning on the validation split (seed {seed}; * = the "
      "setting the test seeds ran)",
      "",
      "| method | setting | validation greedy acc | test result |",
      "|---|---|---|---|",
  ]
  for row in rows:
    test = summary.get(row["name"], "") if row["chosen"] else ""
    mark = " *" if row["chosen"] else ""
    lines.append(
        f"| {row['name']} | {row['overrides']}{mark} | "
        f"{100 * row['validation_acc']:.1f}% | {_short(test)} |"
    )
  with open(os.path.join(workdir, "report.md"), "a") as f:
    f.write("\n".join(lines) + "\n")


def _short(stats: Any) -> str:
  """The test accuracy of a summary entry (`report.summarize`)."""
  if not stats:
    return ""
  accs = stats["acc"]
  return (
      f"{100 * sum(accs) / len(accs):.1f}% (mean of {len(accs)} test " "seeds)"
  )
