"""Sweep runner: the smoke followups sweep end to end, skip and resume,
override errors, and every shipped sweep's configs at every profile."""

import csv
import os
import textwrap

import pytest

from experiments import sweep as sweep_lib
from experiments import sweeps

SWEEPS = ("experiments/sweeps/followups.py", "experiments/sweeps/figure5.py")
FOLLOWUPS = SWEEPS[0]


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("followups"))
  sweep_lib.run_sweep(FOLLOWUPS, workdir, smoke=True)
  return workdir


def _rows(workdir):
  with open(os.path.join(workdir, sweep_lib.RESULTS_FILE)) as f:
    return list(csv.DictReader(f))


def test_smoke_sweep_writes_results_report_and_plots(smoke_dir):
  sweep = sweep_lib.load_sweep(FOLLOWUPS, smoke=True)
  names = [run["name"] for run in sweep["runs"]]
  rows = _rows(smoke_dir)
  assert tuple(rows[0]) == sweep_lib.COLUMNS
  # The SFT's final evaluation, then each RL run evaluated at steps 1, 2.
  expected = [("sft", "0", "2")] + [(n, "0", s) for n in names
                                    for s in ("1", "2")]
  assert [(r["name"], r["seed"], r["step"]) for r in rows] == expected
  for row in rows:
    assert 0.0 <= float(row["greedy_acc_lo"]) <= float(row["greedy_acc"])
    assert float(row["greedy_acc"]) <= float(row["greedy_acc_hi"]) <= 1.0
    assert float(row["response_length"]) > 0
  with open(os.path.join(smoke_dir, sweep_lib.REPORT_FILE)) as f:
    report = f.read()
  table = [line for line in report.splitlines() if line.startswith("| ")]
  assert table[0].startswith("| method | accuracy | gain over SFT")
  assert [line.split(" | ")[0][2:] for line in table[1:]] == (
      ["SFT (no RL)"] + names)
  for filename in sweep_lib.PLOTS:
    with open(os.path.join(smoke_dir, filename), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_runs_and_resumes_an_unfinished_one(smoke_dir):
  runs = [os.path.join(smoke_dir, "sft_seed_0")] + [
      os.path.join(smoke_dir, n, "seed_0")
      for n in ("grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "gspo")]

  def snapshot(directory):
    path = os.path.join(directory, "metrics.jsonl")
    with open(path, "rb") as f:
      return os.stat(path).st_mtime_ns, f.read()

  before = {d: snapshot(d) for d in runs}
  # A run killed after its last checkpoint but before its evaluation.
  unfinished = runs[-1]
  os.remove(os.path.join(unfinished, "eval.json"))
  rows = _rows(smoke_dir)
  sweep_lib.run_sweep(FOLLOWUPS, smoke_dir, smoke=True)
  for directory in runs[:-1]:
    assert snapshot(directory) == before[directory], directory
  assert os.path.exists(os.path.join(unfinished, "eval.json"))
  # Resumed at its last step: nothing retrained, same metrics.
  assert snapshot(unfinished)[1] == before[unfinished][1]
  assert _rows(smoke_dir) == rows


def test_workdir_of_another_profile_is_refused(smoke_dir):
  with pytest.raises(ValueError, match="use another workdir"):
    sweep_lib.run_sweep(FOLLOWUPS, smoke_dir, profile="quick", smoke=False)


@pytest.mark.parametrize("path", SWEEPS)
@pytest.mark.parametrize("profile,smoke", [("quick", False), ("full", False),
                                           ("quick", True)])
def test_every_sweep_config_builds_and_validates(path, profile, smoke,
                                                 tmp_path):
  sweep = sweep_lib.load_sweep(path, profile, smoke)
  jobs = sweep_lib.plan(sweep, str(tmp_path))
  seeds = sweep["seeds"]
  assert len(seeds) == (1 if smoke else len(sweeps.profile_settings(
      profile)["seeds"]))
  if profile == "quick" and not smoke:
    assert len(seeds) >= 3
  assert len(jobs) == len(seeds) * (1 + len(sweep["runs"]))
  for name, seed, config in jobs:
    assert config.seed == seed
    if name == sweep_lib.SFT_NAME:
      assert config.coef.name == "sft" and not config.init_from
    else:
      assert config.init_from == str(tmp_path / f"sft_seed_{seed}")
      assert config.eval_every > 0
  assert not os.listdir(tmp_path)  # planning trains nothing


def test_unknown_profile_lists_valid_ones():
  with pytest.raises(ValueError, match="quick, full"):
    sweep_lib.load_sweep(FOLLOWUPS, "fast")


def test_bad_override_key_fails_before_training(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(textwrap.dedent("""\
      from experiments import sweeps

      def get_sweep(profile):
        sweep = sweeps.profile_settings(profile)
        sweep["runs"] = [{"name": "grpo", "config": sweeps.config_path("grpo"),
                          "overrides": {"coef.betta": 0.0}}]
        return sweep
      """))
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=r"run 'grpo'.*'coef.betta' is not a "
                     r"config field \(valid here: .*beta"):
    sweep_lib.run_sweep(str(path), str(workdir), smoke=True)
  assert not workdir.exists()


def test_override_errors_name_the_field():
  config = sweep_lib.load_config("experiments/configs/grpo.py")
  with pytest.raises(ValueError, match="'sampling.questions.x' is not"):
    sweep_lib.apply_overrides(config, {"sampling.questions.x": 1}, "here")
  with pytest.raises(ValueError, match="here: override steps='ten'"):
    sweep_lib.apply_overrides(config, {"steps": "ten"}, "here")
  sweep_lib.apply_overrides(config, {"coef.beta": 0.0, "steps": 7}, "here")
  assert (config.coef.beta, config.steps) == (0.0, 7)


def test_malformed_sweep_is_refused(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("def get_sweep(profile):\n  return {'runs': []}\n")
  with pytest.raises(ValueError, match="must return a dict with keys"):
    sweep_lib.load_sweep(str(path))


def test_t_interval():
  mean, lo, hi = sweep_lib.t_interval([1.0, 2.0, 3.0])
  # t(0.975, 2) = 4.302653, standard error 1 / sqrt(3).
  assert mean == 2.0
  assert hi - mean == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
  assert mean - lo == pytest.approx(hi - mean)
  assert sweep_lib.t_interval([0.5]) == (0.5, None, None)
