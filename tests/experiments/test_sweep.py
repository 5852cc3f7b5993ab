"""Sweep runner: the smoke version of every shipped sweep end to end, skip
and resume, run references, override errors, and every shipped sweep's
configs at every profile."""

import csv
import glob
import json
import os
import shutil
import socket
import textwrap

import pytest

from experiments import sweep_report as report_lib
from experiments import sweep as sweep_lib
from experiments import sweep_file
from experiments import sweep_plan
from experiments import sweeps
from experiments import tune
from experiments.configs import base
from ugrad.runtime import lock
from ugrad.training import runs as runs_lib

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
# Every sweep file, so a new one is covered without touching this test.
SWEEPS = tuple(
    sorted(
        os.path.relpath(p, _REPO)
        for p in glob.glob(os.path.join(_REPO, "experiments/sweeps/*.py"))
        if os.path.basename(p) != "__init__.py"
    )
)
# Trained end to end at smoke size in CI. The others only combine run kinds
# these already train (policy runs, reward models, references, a changed
# task) and are built and validated below; CI time is the limit.
SMOKE_TRAINED = tuple(
    p
    for p in SWEEPS
    if not p.endswith(
        (
            "hard_task.py",
            "hard_task_tuned.py",
            "reward_hacking.py",
            "figure5_tuned.py",
            "headline.py",
            "lora.py",
            "preference.py",
            "tools.py",
        )
    )
)
FOLLOWUPS = "experiments/sweeps/followups.py"
FIGURE5 = "experiments/sweeps/figure5.py"
PREFERENCE = "experiments/sweeps/preference.py"
FIGURE7 = "experiments/sweeps/figure7.py"
PNG = b"\x89PNG\r\n\x1a\n"


def _job_key(config, workdir):
  """A run's config with its sweep's workdir abstracted: equal keys train
  the same run."""
  return config.to_json().replace(os.path.abspath(workdir), "<workdir>")


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory):
  """sweep path -> the workdir of its finished smoke run, run on first use.

  A run whose config (up to the workdir) an earlier smoke sweep of this
  file already trained is copied in before the sweep starts, so the sweep
  skips it: every distinct run still trains once, and the file stays fast
  (the SFT is shared by all sweeps, GRPO and the ORM by several).
  """
  done, trained = {}, {}

  def get(path):
    if path not in done:
      workdir = str(
          tmp_path_factory.mktemp(os.path.splitext(os.path.basename(path))[0])
      )
      jobs = sweep_plan.plan(sweep_file.load_sweep(path, smoke=True), workdir)
      for name, seed, config in jobs:
        source = trained.get(_job_key(config, workdir))
        if source:
          shutil.copytree(
              source,
              sweep_plan.run_dir(workdir, name, seed),
              ignore=shutil.ignore_patterns(sweep_lib.EVAL_K_FILE),
          )
      sweep_lib.run_sweep(path, workdir, smoke=True)
      for name, seed, config in jobs:
        trained.setdefault(
            _job_key(config, workdir), sweep_plan.run_dir(workdir, name, seed)
        )
      done[path] = workdir
    return done[path]

  return get


def _rows(workdir, filename=sweep_lib.RESULTS_FILE):
  with open(os.path.join(workdir, filename)) as f:
    return list(csv.DictReader(f))


def _report_tables(workdir):
  """The report's tables: lists of rows, each a list of cells."""
  with open(os.path.join(workdir, report_lib.REPORT_FILE)) as f:
    lines = f.read().splitlines()
  tables, current = [], None
  for line in lines:
    if line.startswith("|"):
      if current is None:
        current = []
        tables.append(current)
      if not line.startswith("|---"):
        current.append([c.strip() for c in line.strip("|").split("|")])
    else:
      current = None
  return tables


def _expected_steps(config):
  """Steps of a run's results.csv rows: each periodic evaluation, and the
  final one when no periodic one was at the last step."""
  every = config.eval_every
  steps = [s for s in range(1, config.steps + 1) if every and s % every == 0]
  if not steps or steps[-1] != config.steps:
    steps.append(config.steps)
  return [str(s) for s in steps]


def _check_accuracy_outputs(workdir, jobs, policy):
  rows = _rows(workdir)
  assert tuple(rows[0]) == sweep_lib.COLUMNS
  expected = [
      (name, str(seed), step)
      for name, seed, config in jobs
      if name in policy
      for step in _expected_steps(config)
  ]
  assert sorted((r["name"], r["seed"], r["step"]) for r in rows) == sorted(
      expected
  )
  for row in rows:
    assert 0.0 <= float(row["greedy_acc_lo"]) <= float(row["greedy_acc"])
    assert float(row["greedy_acc"]) <= float(row["greedy_acc_hi"]) <= 1.0
    assert float(row["response_length"]) >= 0
  table = _report_tables(workdir)[0]
  assert table[0][:3] == ["method", "accuracy", "gain over SFT"]
  assert [r[0] for r in table[1:]] == ["SFT (no RL)"] + policy[1:]
  for filename in report_lib.PLOTS:
    with open(os.path.join(workdir, filename), "rb") as f:
      assert f.read(8) == PNG


_RM_METRICS = {
    "orm": ["orm_acc", "orm_auc"],
    "prm": ["step_acc", "step_auc", "solution_acc", "solution_auc"],
}


def _check_reward_model_table(workdir, jobs, reward_models):
  tables = _report_tables(workdir)
  if not reward_models:
    assert all(t[0][0] != "reward model" for t in tables)
    return
  (table,) = [t for t in tables if t[0][0] == "reward model"]
  kinds = {
      name: config.rm.kind for name, _, config in jobs if name in reward_models
  }
  expected = [
      (name, key) for name in reward_models for key in _RM_METRICS[kinds[name]]
  ]
  assert sorted((r[0], r[1]) for r in table[1:]) == sorted(expected)


def _check_sampled_outputs(workdir, sweep, policy):
  tables = _report_tables(workdir)
  sampled_path = os.path.join(workdir, sweep_lib.SAMPLED_FILE)
  if "evaluate" not in sweep:
    assert not os.path.exists(sampled_path)
    assert all(t[0][:2] != ["method", "k"] for t in tables)
    return
  ks = sorted(sweep["evaluate"]["k"])
  rows = _rows(workdir, sweep_lib.SAMPLED_FILE)
  assert tuple(rows[0]) == sweep_lib.SAMPLED_COLUMNS
  assert [(r["name"], r["seed"], r["k"]) for r in rows] == [
      (n, str(s), str(k)) for n in policy for s in sweep["seeds"] for k in ks
  ]
  for name in policy:
    for seed in sweep["seeds"]:
      mine = [r for r in rows if (r["name"], r["seed"]) == (name, str(seed))]
      passes = [float(r["pass_at_k"]) for r in mine]
      assert passes == sorted(passes)  # pass@k never falls with k
      assert all(
          0.0 <= float(r["maj_at_k"]) <= p <= 1.0 for r, p in zip(mine, passes)
      )
      assert float(mine[0]["maj_at_k"]) == passes[0]  # maj@1 == pass@1
      with open(
          os.path.join(
              sweep_plan.run_dir(workdir, name, seed), sweep_lib.EVAL_K_FILE
          )
      ) as f:
        result = json.load(f)
      assert (result["ks"], result["seed"]) == (ks, seed)
  (table,) = [t for t in tables if t[0][:2] == ["method", "k"]]
  assert table[0][2:5] == ["pass@k", "maj@k", "pass@k gain"]
  labels = ["SFT (no RL)" if n == report_lib.SFT_NAME else n for n in policy]
  assert [(r[0], r[1]) for r in table[1:]] == [
      (label, str(k)) for label in labels for k in ks
  ]
  with open(os.path.join(workdir, report_lib.SAMPLED_PLOT), "rb") as f:
    assert f.read(8) == PNG


@pytest.mark.slow
@pytest.mark.parametrize("path", SMOKE_TRAINED)
def test_smoke_sweep_writes_results_report_and_plots(path, smoke_workdir):
  workdir = smoke_workdir(path)
  sweep = sweep_file.load_sweep(path, smoke=True)
  jobs = sweep_plan.plan(sweep, workdir)
  trainers = sweep_plan.run_trainers(sweep)
  policy = [n for n, t in trainers.items() if t == sweep_plan.POLICY]
  reward_models = [
      n for n, t in trainers.items() if t == sweep_plan.REWARD_MODEL
  ]
  _check_accuracy_outputs(workdir, jobs, policy)
  _check_reward_model_table(workdir, jobs, reward_models)
  _check_sampled_outputs(workdir, sweep, policy)


@pytest.mark.slow
def test_figure5_trains_and_uses_learned_rewards(smoke_workdir):
  workdir = smoke_workdir(FIGURE5)
  names = [run["name"] for run in sweep_file.load_sweep(FIGURE5)["runs"]]
  # The rule-reward rows keep their names and order: old workdirs reuse.
  assert names[:6] == [
      "rft",
      "online_rft",
      "dpo",
      "ppo",
      "grpo",
      "grpo_process",
  ]
  assert names[6:] == ["orm", "grpo_orm", "prm", "grpo_prm"]
  for name, field in (
      ("grpo_orm", "reward_model"),
      ("grpo_prm", "process_reward_model"),
  ):
    with open(os.path.join(workdir, name, "seed_0", "run_config.json")) as f:
      config = json.load(f)
    model = config[field]
    assert model.endswith(os.path.join(name[5:], "seed_0"))
    with open(os.path.join(model, "run_config.json")) as f:
      assert json.load(f)["trainer"] == sweep_plan.REWARD_MODEL


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_resumes_an_unfinished_one(
    smoke_workdir, capsys
):
  smoke_dir = smoke_workdir(FOLLOWUPS)
  runs = [os.path.join(smoke_dir, "sft_seed_0")] + [
      os.path.join(smoke_dir, n, "seed_0")
      for n in ("grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "gspo")
  ]

  def snapshot(directory):
    path = os.path.join(directory, "metrics.jsonl")
    with open(path, "rb") as f:
      return os.stat(path).st_mtime_ns, f.read()

  before = {d: snapshot(d) for d in runs}
  # A run killed after its last checkpoint but before its evaluation.
  unfinished = runs[-1]
  os.remove(os.path.join(unfinished, "eval.json"))
  rows = _rows(smoke_dir)
  # Held by another live process (the test's parent): skipped and said so.
  with open(os.path.join(unfinished, lock.LOCK_FILE), "w") as f:
    json.dump(
        {
            "host": socket.gethostname(),
            "pid": os.getppid(),
            "since": "2026-01-01T00:00:00",
        },
        f,
    )
  assert sweep_lib.run_sweep(FOLLOWUPS, smoke_dir, smoke=True) == {}
  assert f"skipped, {unfinished} is in use by PID {os.getppid()}" in (
      capsys.readouterr().out
  )
  assert not os.path.exists(os.path.join(unfinished, "eval.json"))
  os.remove(os.path.join(unfinished, lock.LOCK_FILE))
  sweep_lib.run_sweep(FOLLOWUPS, smoke_dir, smoke=True)
  for directory in runs[:-1]:
    assert snapshot(directory) == before[directory], directory
  assert os.path.exists(os.path.join(unfinished, "eval.json"))
  # Resumed at its last step: nothing retrained, same metrics.
  assert snapshot(unfinished)[1] == before[unfinished][1]
  assert _rows(smoke_dir) == rows


# Slow for its fixture (a smoke sweep).
@pytest.mark.slow
def test_sampled_evaluation_is_skipped_when_done_and_checked(smoke_workdir):
  workdir = smoke_workdir(FIGURE7)
  sampled = _rows(workdir, sweep_lib.SAMPLED_FILE)
  path = os.path.join(workdir, "grpo", "seed_0", sweep_lib.EVAL_K_FILE)
  mtime = os.stat(path).st_mtime_ns
  sweep_lib.run_sweep(FIGURE7, workdir, smoke=True)
  assert os.stat(path).st_mtime_ns == mtime
  assert _rows(workdir, sweep_lib.SAMPLED_FILE) == sampled
  # One made with other settings (here: by hand with another seed).
  with open(path) as f:
    result = json.load(f)
  try:
    with open(path, "w") as f:
      json.dump(dict(result, seed=7), f)
    with pytest.raises(
        ValueError,
        match="grpo.*eval_k.json was sampled with " ".*'seed': 7.*delete it",
    ):
      sweep_lib.run_sweep(FIGURE7, workdir, smoke=True)
  finally:
    with open(path, "w") as f:
      json.dump(result, f)


# Slow for its fixture (a smoke sweep).
@pytest.mark.slow
def test_workdir_of_another_profile_is_refused(smoke_workdir):
  with pytest.raises(ValueError, match="use another workdir"):
    sweep_lib.run_sweep(
        FOLLOWUPS, smoke_workdir(FOLLOWUPS), profile="quick", smoke=False
    )


@pytest.mark.parametrize("path", SWEEPS)
@pytest.mark.parametrize(
    "profile,smoke", [("quick", False), ("full", False), ("quick", True)]
)
def test_every_sweep_config_builds_and_validates(
    path, profile, smoke, tmp_path
):
  sweep = sweep_file.load_sweep(path, profile, smoke)
  jobs = sweep_plan.plan(sweep, str(tmp_path))
  seeds = sweep["seeds"]
  if smoke:
    assert len(seeds) == 1
  else:
    assert len(seeds) >= len(sweeps.profile_settings(profile)["seeds"]) >= 3
  assert len(jobs) == len(seeds) * (1 + len(sweep["runs"]))
  for name, seed, config in jobs:
    assert config.seed == seed
    own = {r["name"]: r["overrides"] for r in sweep["runs"]}.get(name, {})
    if name == sweep_plan.SFT_NAME:
      assert config.coef.name == "sft" and not config.init_from
    else:
      if "init_from" not in own:
        assert config.init_from == str(tmp_path / f"sft_seed_{seed}")
      assert config.eval_every > 0
    if config.trainer == sweep_plan.REWARD_MODEL and not smoke:
      assert config.steps == own.get("steps", sweep["rm"]["steps"])
    if smoke:  # whatever a run overrides; iterative RL: a step an iteration
      assert config.steps == max(
          base.get_config("tiny").steps, config.iterative.iterations
      )
      assert config.model == "tiny"
  assert not os.listdir(tmp_path)  # planning trains nothing


def test_run_references_resolve_per_seed(tmp_path):
  sweep = sweep_file.load_sweep(FIGURE5, "quick")
  jobs = sweep_plan.plan(sweep, str(tmp_path))
  configs = {(name, seed): config for name, seed, config in jobs}
  for seed in sweep["seeds"]:
    assert configs[("grpo_orm", seed)].reward_model == str(
        tmp_path / "orm" / f"seed_{seed}"
    )
    assert configs[("grpo_prm", seed)].process_reward_model == str(
        tmp_path / "prm" / f"seed_{seed}"
    )
    # RL runs take the "rl" part, reward models the "rm" part.
    assert configs[("grpo_orm", seed)].steps == sweep["rl"]["steps"]
    assert configs[("prm", seed)].steps == sweep["rm"]["steps"]
    assert configs[("prm", seed)].rm.label == "hard"


def test_a_run_may_start_elsewhere_than_the_sft_policy(tmp_path):
  # The preference sweep's student: trained from scratch, then distilled
  # from the seed's SFT policy (the teacher) or trained on.
  sweep = sweep_file.load_sweep(PREFERENCE, "quick")
  configs = {
      (name, seed): config
      for name, seed, config in sweep_plan.plan(sweep, str(tmp_path))
  }
  for seed in sweep["seeds"]:
    student = str(tmp_path / "student_sft" / f"seed_{seed}")
    assert not configs[("student_sft", seed)].init_from
    assert configs[("student_sft", seed)].model == "embedded_small"
    assert configs[("distill", seed)].init_from == student
    assert configs[("distill", seed)].teacher == str(
        tmp_path / f"sft_seed_{seed}"
    )
    assert configs[("student_sft_more", seed)].init_from == student
    assert configs[("dpo", seed)].init_from == str(
        tmp_path / f"sft_seed_{seed}"
    )
  # Only the grid's runs are tuned.
  tuned = tune.tuning_sweep(sweep)["runs"]
  assert {r["name"].rsplit("_tune", 1)[0] for r in tuned} == set(
      sweep["tune"]["grid"]
  )


def _write_sweep(tmp_path, runs, **parts):
  path = tmp_path / "sweep_file.py"
  path.write_text(textwrap.dedent(f"""\
      from experiments import sweeps

      def get_sweep(profile):
        sweep = sweeps.profile_settings(profile)
        sweep["runs"] = {runs!r}
        sweep.update({parts!r})
        return sweep
      """))
  return str(path)


def _run(name, method, **overrides):
  return {
      "name": name,
      "config": sweeps.config_path(method),
      "overrides": overrides,
  }


@pytest.mark.parametrize(
    "runs,match",
    [
        # Listed after the run that uses it.
        (
            [
                _run(
                    "grpo_orm", "grpo", reward="model", reward_model="{run:orm}"
                ),
                _run("orm", "orm"),
            ],
            r"run 'grpo_orm': override reward_model='\{run:orm\}' refers to "
            r"run 'orm', which is not listed before it; valid here: sft",
        ),
        # Not in the sweep at all.
        (
            [
                _run("orm", "orm"),
                _run(
                    "grpo_orm",
                    "grpo",
                    reward="model",
                    reward_model="{run:ormm}",
                ),
            ],
            r"refers to run 'ormm', which is not listed before it; valid here: "
            r"sft, orm",
        ),
    ],
)
def test_reference_to_a_later_or_unknown_run_fails_before_training(
    runs, match, tmp_path
):
  path = _write_sweep(tmp_path, runs)
  with pytest.raises(ValueError, match=match):
    sweep_file.load_sweep(path)
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    sweep_lib.run_sweep(path, str(workdir), smoke=True)
  assert not workdir.exists()


@pytest.mark.parametrize(
    "parts,match",
    [
        (
            {"evaluate": {"k": [1, 0], "questions": 8}},
            r"evaluate k must be distinct ints >= 1, got \[1, 0\]",
        ),
        (
            {"evaluate": {"k": [1], "questions": 8, "temprature": 1.0}},
            "'evaluate' must be a dict with keys k, questions and optionally "
            "temperature",
        ),
        (
            {"evaluate": {"k": [1], "questions": 0}},
            "evaluate questions must be an int >= 1",
        ),
        (
            {"extra": {}},
            r"optionally \['evaluate', 'findings', 'rm', 'tune'\], "
            r"got .*'extra'",
        ),
        (
            {"findings": [{"claim": "c", "a": "grpo", "b": "ppo"}]},
            "finding 'c': b='ppo' is not a run; valid: sft, grpo",
        ),
        (
            {"findings": [{"claim": "c", "a": "grpo"}]},
            "each finding must be a dict with keys claim, a and b",
        ),
        (
            {
                "findings": [{"claim": "c", "a": "grpo", "k": 4}],
                "evaluate": {"k": [1, 2], "questions": 8},
            },
            r"finding 'c': k=4 is not among the sweep's evaluate k \[1, 2\]",
        ),
    ],
)
def test_malformed_optional_parts_are_refused(parts, match, tmp_path):
  path = _write_sweep(tmp_path, [_run("grpo", "grpo")], **parts)
  with pytest.raises(ValueError, match=match):
    sweep_file.load_sweep(path)


def test_seeds_replace_the_sweeps_own():
  assert sweep_file.load_sweep(FOLLOWUPS, seeds=[3, 4])["seeds"] == [3, 4]
  assert sweep_file.load_sweep(FOLLOWUPS, smoke=True, seeds=[5])["seeds"] == [5]
  with pytest.raises(
      ValueError, match=r"seeds must be distinct ints, got " r"\[1, 1\]"
  ):
    sweep_file.load_sweep(FOLLOWUPS, seeds=[1, 1])


def test_unknown_profile_lists_valid_ones():
  with pytest.raises(ValueError, match="quick, full"):
    sweep_file.load_sweep(FOLLOWUPS, "fast")


def test_bad_override_key_fails_before_training(tmp_path):
  path = _write_sweep(tmp_path, [_run("grpo", "grpo", **{"coef.betta": 0.0})])
  workdir = tmp_path / "run"
  with pytest.raises(
      ValueError,
      match=r"run 'grpo'.*'coef.betta' is not a "
      r"config field \(valid here: .*beta",
  ):
    sweep_lib.run_sweep(path, str(workdir), smoke=True)
  assert not workdir.exists()


def test_override_errors_name_the_field():
  config = sweep_file.load_config("experiments/configs/grpo.py")
  with pytest.raises(ValueError, match="'sampling.questions.x' is not"):
    sweep_file.apply_overrides(config, {"sampling.questions.x": 1}, "here")
  with pytest.raises(ValueError, match="here: override steps='ten'"):
    sweep_file.apply_overrides(config, {"steps": "ten"}, "here")
  sweep_file.apply_overrides(config, {"coef.beta": 0.0, "steps": 7}, "here")
  assert (config.coef.beta, config.steps) == (0.0, 7)


def test_malformed_sweep_is_refused(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("def get_sweep(profile):\n  return {'runs': []}\n")
  with pytest.raises(ValueError, match="must return a dict with keys"):
    sweep_file.load_sweep(str(path))


_TUNED_SWEEP = textwrap.dedent("""
    from experiments import sweeps

    def get_sweep(profile):
      sweep = sweeps.profile_settings(profile)
      sweep["shared"]["task_kwargs.val_fraction"] = 0.05
      sweep["runs"] = [{"name": m, "config": sweeps.config_path(m),
                        "overrides": {}} for m in ("grpo", "rloo")]
      sweep["tune"] = {"seed": 7, "grid": {"grpo": {
          "optim.lr": [1e-5, 3e-4]}}}
      return sweep
    """)


@pytest.mark.slow
def test_tune_picks_on_validation_and_runs_the_pick_on_test_seeds(tmp_path):
  path = tmp_path / "tuned.py"
  path.write_text(_TUNED_SWEEP)
  workdir = str(tmp_path / "work")
  sweep_lib.run_sweep(str(path), workdir, smoke=True)
  with open(os.path.join(workdir, tune.TUNE_FILE)) as f:
    rows = list(csv.DictReader(f))
  assert [(r["name"], json.loads(r["overrides"])) for r in rows] == [
      ("grpo", {"optim.lr": 1e-5}),
      ("grpo", {"optim.lr": 3e-4}),
  ]
  chosen = [r for r in rows if r["chosen"] == "1"]
  assert len(chosen) == 1
  for r in rows:  # Scored on the validation split, seed 7.
    config = runs_lib.read_config(
        sweep_plan.run_dir(
            os.path.join(workdir, tune.TUNE_DIR), f"grpo_tune{r['setting']}", 7
        )
    )
    assert config.eval_split == "validation" and config.seed == 7
  test_run = runs_lib.read_config(sweep_plan.run_dir(workdir, "grpo", 0))
  assert test_run.eval_split == "test"
  assert test_run.optim.lr == json.loads(chosen[0]["overrides"])["optim.lr"]
  with open(os.path.join(workdir, "report.md")) as f:
    assert "## Tuning on the validation split (seed 7" in f.read()


def test_tune_without_a_validation_split_is_refused(tmp_path):
  path = tmp_path / "tuned.py"
  path.write_text(
      _TUNED_SWEEP.replace(
          'sweep["shared"]["task_kwargs.val_fraction"] = 0.05', "pass"
      )
  )
  with pytest.raises(ValueError, match="tuning needs a validation split"):
    sweep_file.load_sweep(str(path))


def test_a_finished_run_configured_differently_is_refused(tmp_path):
  sweep = sweep_file.load_sweep(FOLLOWUPS, smoke=True)
  jobs = sweep_plan.plan(sweep, str(tmp_path))
  name, seed, config = jobs[1]
  directory = sweep_plan.run_dir(str(tmp_path), name, seed)
  os.makedirs(directory)
  runs_lib.write_config(directory, config)
  with open(os.path.join(directory, "eval.json"), "w") as f:
    json.dump({"final": {"greedy_acc": 0.5}}, f)
  # The same config (its paths aside: a moved workdir keeps its runs).
  same = config.copy_and_resolve_references()
  same.init_from = "/elsewhere/sft_seed_0"
  # Another default warm start: no run of a sweep trains its own.
  same.warm_start.update(steps=7, schedule="cosine", final_fraction=0.9)
  assert sweep_lib._train([(name, seed, same)], str(tmp_path)) == []
  edited = config.copy_and_resolve_references()
  edited.optim.lr *= 3
  with pytest.raises(ValueError, match=r"another config.*different: optim.lr"):
    sweep_lib._train([(name, seed, edited)], str(tmp_path))
  # A setting added to ugrad since the run finished: no change while off.
  upgraded = config.copy_and_resolve_references()
  with upgraded.unlocked():
    upgraded.data.new_feature = False
  assert sweep_lib._train([(name, seed, upgraded)], str(tmp_path)) == []
  with upgraded.unlocked():
    upgraded.data.new_feature = True
  with pytest.raises(ValueError, match=r"different: data.new_feature"):
    sweep_lib._train([(name, seed, upgraded)], str(tmp_path))
  # A run finished before a section existed: its keys at their defaults.
  older = json.loads(config.to_json())
  del older["episodes"]
  with open(os.path.join(directory, runs_lib.CONFIG_FILE), "w") as f:
    json.dump(older, f)
  assert sweep_lib._train([(name, seed, config)], str(tmp_path)) == []
