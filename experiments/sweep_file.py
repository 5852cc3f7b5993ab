"""Sweep files: reading, checking and shrinking them, and the configs they name.

A sweep file (see `experiments/sweeps/__init__.py`) is a Python module whose
`get_sweep(profile)` returns a dict: runs (name, config, overrides), seeds,
and the override dicts `shared`, `sft`, `rl` (and optionally `rm`,
`evaluate`). Everything here is checked before any training starts, and each
error names the sweep file and the entry.
"""

import importlib
import importlib.util
import os
import re
from typing import Any

import ml_collections

from experiments import sweep_report as report
from experiments import tune
from experiments.configs import base
from ugrad import errors

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_NAME = report.SFT_NAME
_SWEEP_KEYS = {"runs", "seeds", "shared", "sft", "rl"}
_OPTIONAL_KEYS = {"rm", "evaluate", "tune", "findings"}
_PARTS = ("shared", "sft", "rl", "rm")  # override dicts
_RUN_KEYS = {"name", "config", "overrides"}
_EVALUATE_KEYS = {"k", "questions", "temperature"}
# "{run:orm}" in an override value: that seed's run directory of run "orm".
REFERENCE = re.compile(r"\{run:([^{}]*)\}")

# --smoke marks the sweep with this key; `plan` then shrinks every run's
# config with `smoke_config`.
SMOKE_KEY = "smoke"
# Merged into a sweep's "evaluate" part, when it has one.
SMOKE_EVALUATE = {"k": [1, 2, 4], "questions": 4}

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
    raise errors.MissingInput(f"{kind} file {path!r} does not exist")
  name = "_sweep_" + os.path.splitext(os.path.basename(resolved))[0]
  spec = importlib.util.spec_from_file_location(name, resolved)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(
    path: str,
    profile: str = "quick",
    smoke: bool = False,
    seeds: list[int] | None = None,
) -> dict:
  """The sweep of file `path` for `profile`, checked; shrunk by `smoke`.

  `seeds`, when given, replaces the sweep's seeds (a subset to start with,
  or more seeds added to a finished sweep, whose runs are reused).

  Raises:
    errors.MissingInput: when the file does not exist.
    errors.UserError: for a malformed sweep.
    ValueError: for an unknown profile (`sweeps.profile_settings`).
  """
  module = _load_module(path, "sweep")
  if not hasattr(module, "get_sweep"):
    raise errors.UserError(f"sweep file {path} defines no get_sweep(profile)")
  sweep = module.get_sweep(profile)
  if seeds is not None and isinstance(sweep, dict):
    sweep["seeds"] = list(seeds)
  _check_sweep(path, sweep)
  sweep.setdefault("rm", {})
  if smoke:
    _shrink(sweep)
  return sweep


def _shrink(sweep: dict):
  """Applies --smoke in place: one seed, a small sampled evaluation, and
  the mark that makes `plan` shrink every run (`smoke_config`)."""
  sweep["seeds"] = sweep["seeds"][:1]
  if "evaluate" in sweep:
    sweep["evaluate"] = {**sweep["evaluate"], **SMOKE_EVALUATE}
  sweep[SMOKE_KEY] = True


def smoke_config(config: ml_collections.ConfigDict, sft: bool):
  """A run's config under --smoke, changed in place: the `tiny` variant
  (`experiments.configs.base.tiny`: tiny model, 2 steps, iterative RL a step
  an iteration), applied after the sweep's overrides so that it wins over
  them; every run but the SFT evaluates at each step, for its curves."""
  base.tiny(config)
  if not sft:
    config.eval_every = 1


def _check_sweep(path: str, sweep: Any):
  """Refuses a malformed sweep dict, naming the file and the problem."""
  keys = set(sweep) if isinstance(sweep, dict) else set()
  if not isinstance(sweep, dict) or not (
      _SWEEP_KEYS <= keys <= _SWEEP_KEYS | _OPTIONAL_KEYS
  ):
    got = sorted(sweep) if isinstance(sweep, dict) else type(sweep).__name__
    raise errors.UserError(
        f"{path}: get_sweep must return a dict with keys "
        f"{sorted(_SWEEP_KEYS)} and optionally "
        f"{sorted(_OPTIONAL_KEYS)}, got {got}"
    )
  seeds = sweep["seeds"]
  if (
      not seeds
      or not all(isinstance(s, int) for s in seeds)
      or (len(set(seeds)) != len(seeds))
  ):
    raise errors.UserError(
        f"{path}: seeds must be distinct ints, got {seeds!r}"
    )
  for part in _PARTS:
    if not isinstance(sweep.get(part, {}), dict):
      raise errors.UserError(
          f"{path}: {part!r} must be a dict of overrides, got "
          f"{sweep[part]!r}"
      )
  names = []
  for run in sweep["runs"]:
    if (
        not isinstance(run, dict)
        or set(run) != _RUN_KEYS
        or (not isinstance(run["overrides"], dict))
    ):
      raise errors.UserError(
          f"{path}: each run must be a dict with keys "
          f"{sorted(_RUN_KEYS)} (overrides a dict), got {run!r}"
      )
    names.append(run["name"])
  if not names or len(set(names)) != len(names) or SFT_NAME in names:
    raise errors.UserError(
        f"{path}: run names must be distinct and not "
        f"{SFT_NAME!r} (the shared warm start), got {names}"
    )
  _check_references(path, sweep["runs"])
  if "evaluate" in sweep:
    _check_evaluate(path, sweep["evaluate"])
  if "tune" in sweep:
    tune.check(path, sweep)
  if "findings" in sweep:
    _check_findings(path, sweep, [SFT_NAME] + names)


def references(value: Any) -> list[str]:
  """The run names a value refers to with "{run:<name>}"."""
  return REFERENCE.findall(value) if isinstance(value, str) else []


def _check_references(path: str, runs: list[dict]):
  """Every "{run:<name>}" names the SFT or a run listed before, which the
  sweep trains first for the same seed."""
  earlier = [SFT_NAME]
  for run in runs:
    for key, value in run["overrides"].items():
      for name in references(value):
        if name not in earlier:
          raise errors.UserError(
              f"{path}: run {run['name']!r}: override {key}={value!r} "
              f"refers to run {name!r}, which is not listed before it; "
              f"valid here: {', '.join(earlier)}"
          )
    earlier.append(run["name"])


def _check_evaluate(path: str, spec: Any):
  """The "evaluate" part: {"k": [...], "questions": N, "temperature": T}."""
  if not isinstance(spec, dict) or not (
      {"k", "questions"} <= set(spec) <= _EVALUATE_KEYS
  ):
    raise errors.UserError(
        f"{path}: 'evaluate' must be a dict with keys k, "
        "questions and optionally temperature, got "
        f"{spec!r}"
    )
  ks = spec["k"]
  if (
      not isinstance(ks, (list, tuple))
      or not ks
      or not all(isinstance(k, int) and k >= 1 for k in ks)
      or len(set(ks)) != len(ks)
  ):
    raise errors.UserError(
        f"{path}: evaluate k must be distinct ints >= 1, got " f"{ks!r}"
    )
  if not isinstance(spec["questions"], int) or spec["questions"] < 1:
    raise errors.UserError(
        f"{path}: evaluate questions must be an int >= 1, got "
        f"{spec['questions']!r}"
    )
  temperature = spec.get("temperature", 1.0)
  if not isinstance(temperature, (int, float)) or temperature <= 0:
    raise errors.UserError(
        f"{path}: evaluate temperature must be > 0, got " f"{temperature!r}"
    )


def _check_findings(path: str, sweep: dict, names: list[str]):
  """The "findings" part: a list of {"claim", "a", "b"} (run a's final
  greedy accuracy above run b's) or {"claim", "a", "k"} (run a raises maj@k
  more than pass@k over SFT; needs "evaluate" with that k)."""
  findings = sweep["findings"]
  if not isinstance(findings, list) or not findings:
    raise errors.UserError(
        f"{path}: 'findings' must be a non-empty list, got " f"{findings!r}"
    )
  ks = sweep.get("evaluate", {}).get("k", [])
  for finding in findings:
    keys = set(finding) if isinstance(finding, dict) else set()
    if keys not in ({"claim", "a", "b"}, {"claim", "a", "k"}):
      raise errors.UserError(
          f"{path}: each finding must be a dict with keys "
          f"claim, a and b (or claim, a and k), got {finding!r}"
      )
    for key in ("a", "b"):
      if key in finding and finding[key] not in names:
        raise errors.UserError(
            f"{path}: finding {finding['claim']!r}: {key}="
            f"{finding[key]!r} is not a run; valid: "
            f"{', '.join(names)}"
        )
    if "k" in finding and finding["k"] not in ks:
      raise errors.UserError(
          f"{path}: finding {finding['claim']!r}: k="
          f"{finding['k']!r} is not among the sweep's evaluate "
          f"k {ks}"
      )


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, locked so new fields are refused.

  `path` may end in ":<variant>" as on the launcher's command line
  (`experiments/configs/grpo.py:tiny`); the variant goes to get_config.
  """
  path, *variant = path.split(":", 1)
  config = _load_module(path, "config").get_config(*variant)
  config.lock()
  return config


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict, where: str
):
  """Sets dotted fields (`{"coef.beta": 0.0}`) of a locked config in place.

  Raises:
    errors.UserError: naming `where` and the key, for a field the config
      lacks or a value of the wrong type.
  """
  for key, value in overrides.items():
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        valid = (
            ", ".join(sorted(node.keys()))
            if isinstance(node, ml_collections.ConfigDict)
            else "none"
        )
        raise errors.UserError(
            f"{where}: override {key!r}: {'.'.join(parts[:i + 1])!r} is not a "
            f"config field (valid here: {valid})"
        )
      if i < len(parts) - 1:
        node = node[part]
    try:
      setattr(node, parts[-1], value)
    except (TypeError, ValueError) as e:
      raise errors.UserError(
          f"{where}: override {key}={value!r}: {e}"
      ) from None
