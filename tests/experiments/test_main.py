"""experiments/main.py: the SFT warm start and the launcher's run."""

import errno
import json
import os
import re
import signal
import types

import pytest

from experiments import main
from experiments.configs import base
from experiments.configs import grpo
from experiments.configs import ppo
from experiments.configs import sft as sft_config
from tests.helpers import launch_util
from tests.helpers import train_util
from ugrad import errors
from ugrad.runtime import gradlog
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import runs


def test_only_an_sft_policy_run_or_an_init_from_skips_the_warm_start():
  assert not main.needs_sft_warm_start(train_util.tiny("sft"))
  assert main.needs_sft_warm_start(train_util.tiny("grpo"))
  assert not main.needs_sft_warm_start(train_util.tiny("grpo", init_from="x"))
  sft = sft_config.warm_start(train_util.tiny("dpo"))
  assert (sft.coef.name, sft.source, sft.reward) == ("sft", "dataset", "none")
  assert sft.steps == 2 and not sft.sampling.pairs


def test_the_sft_config_is_the_warm_start_of_the_base_config():
  """experiments/configs/sft.py and the warm start of RL runs are one
  definition: they differ only in the name and the checkpoint period."""
  alone = sft_config.get_config().to_dict()
  warm = sft_config.warm_start(base.get_config()).to_dict()
  assert (alone.pop("method"), warm.pop("method")) == ("sft", "sft_warm_start")
  assert (alone.pop("checkpoint_every"), warm.pop("checkpoint_every")) == (
      50,
      base.get_config().warm_start.steps // 4,
  )
  assert alone == warm


def test_the_tiny_variant_is_the_tests_size():
  config = grpo.get_config("tiny")
  assert (config.model, config.steps, config.warm_start.steps) == ("tiny", 2, 2)
  assert (config.sampling.questions, config.sampling.group_size) == (4, 4)
  assert ppo.get_config("tiny").sampling.group_size == 1  # PPO keeps its 1.
  assert grpo.get_config("tiny,") == config
  with pytest.raises(errors.UserError, match="unknown config variant 'big'"):
    grpo.get_config("big")


@pytest.mark.slow
def test_warm_start_trains_sft_once_and_the_run_reports_both(tmp_path):
  workdir = str(tmp_path / "grpo")
  results = main.run(train_util.tiny("grpo"), workdir)
  sft_dir = os.path.join(workdir, "sft")
  assert runs.read_config(workdir).init_from == sft_dir
  assert runs.is_finished_model(sft_dir)
  assert set(results) == {"sft", "final"}
  with open(os.path.join(workdir, runs.EVAL_FILE)) as f:
    assert json.load(f) == results
  sft_rows = metrics_lib.read_metrics(os.path.join(sft_dir, "metrics.jsonl"))
  assert [r["step"] for r in sft_rows] == [1, 2]
  # Running on (here: one step longer) reuses the SFT policy and its eval.
  again = main.run(train_util.tiny("grpo", steps=3), workdir)
  assert again["sft"] == results["sft"]
  assert (
      metrics_lib.read_metrics(os.path.join(sft_dir, "metrics.jsonl"))
      == sft_rows
  )
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3]


def test_a_config_error_is_one_line_without_a_traceback(tmp_path):
  result = launch_util.run(
      launch_util.command(tmp_path / "run", **{"coef.name": "no_such_method"})
  )
  assert result.returncode == main.EXIT_ERROR
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(
      "error: unknown coefficient 'no_such_method'" "; valid: "
  ), result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigterm_saves_the_step_and_exits_75_and_resume_is_exact(tmp_path):
  argv = launch_util.command(tmp_path / "stopped", steps=60)
  proc = launch_util.start(argv)
  launch_util.wait_for_lines(tmp_path / "stopped" / "metrics.jsonl", 7, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == main.EXIT_PREEMPTED, err
  stopped_at = int(
      re.search(r"stopped by SIGTERM after step (\d+) of 60", err).group(1)
  )
  assert stopped_at < 60
  assert str(stopped_at) in os.listdir(tmp_path / "stopped" / "checkpoints")
  assert launch_util.run(argv).returncode == 0
  straight = launch_util.command(tmp_path / "straight", steps=60)
  assert launch_util.run(straight).returncode == 0
  assert launch_util.comparable_metrics(
      tmp_path / "stopped"
  ) == launch_util.comparable_metrics(tmp_path / "straight")
  assert gradlog.verify(tmp_path / "stopped" / "gradient_log.jsonl").ok


@pytest.mark.slow
def test_a_second_run_on_a_held_workdir_exits_at_once(tmp_path):
  # The first run is long enough to outlive the second's start-up
  # whatever the load; it is stopped (and saves) once the second is refused.
  argv = launch_util.command(tmp_path / "run", steps=100_000)
  first = launch_util.start(argv)
  launch_util.wait_for_lines(tmp_path / "run" / "metrics.jsonl", 2, first)
  second = launch_util.run(argv, timeout=120)
  assert second.returncode == main.EXIT_ERROR
  assert re.search(
      rf"error: {tmp_path / 'run'} is in use by PID "
      rf"{first.pid} on \S+ since ",
      second.stderr,
  ), second.stderr
  first.send_signal(signal.SIGTERM)
  first.communicate(timeout=600)
  assert first.returncode == main.EXIT_PREEMPTED
  records = launch_util.comparable_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == list(range(1, len(records) + 1))
  assert gradlog.main(["verify", str(tmp_path / "run")]) == 0


def test_an_unknown_config_field_is_one_line(tmp_path):
  result = launch_util.run(
      launch_util.command(tmp_path / "run", nosuch_field=1)
  )
  assert result.returncode == main.EXIT_ERROR
  assert (
      result.stderr.strip()
      .splitlines()[-1]
      .startswith("error: the config has no field 'nosuch_field'")
  ), result.stderr
  assert "Traceback" not in result.stderr


def test_an_unknown_config_variant_is_one_line(tmp_path):
  argv = launch_util.command(tmp_path / "run")
  argv = [a + ":nosuch" if a.startswith("--config=") else a for a in argv]
  result = launch_util.run(argv)
  assert result.returncode == main.EXIT_ERROR
  assert (
      result.stderr.strip()
      .splitlines()[-1]
      .startswith("error: --config: unknown config variant 'nosuch'")
  ), result.stderr
  assert "Traceback" not in result.stderr


@pytest.fixture
def launcher(monkeypatch):
  """main.main with its flags set (a tiny GRPO config), for errors raised
  by a replaced main.run; nothing trains and no process-wide state
  changes."""
  monkeypatch.setattr(main.compile_cache, "enable", lambda: None)
  monkeypatch.setattr(main.host_memory, "keep_freed_memory", lambda: None)
  monkeypatch.delenv("UGRAD_TRACEBACK", raising=False)
  flag_values = {
      "_CONFIG": grpo.get_config("tiny"),
      "_WORKDIR": "unused",
      "_TRACEBACK": False,
      "_COORDINATOR": "",
      "_NUM_PROCESSES": 0,
      "_PROCESS_ID": -1,
      "_DISTRIBUTED": False,
      "_ALLOW_CONFIG_CHANGE": False,
      "_BREAK_LOCK": False,
  }
  for name, value in flag_values.items():
    monkeypatch.setattr(main, name, types.SimpleNamespace(value=value))

  def launch(error):
    def run(config, workdir, allow_config_change, break_lock):
      del config, workdir, allow_config_change, break_lock
      raise error

    monkeypatch.setattr(main, "run", run)
    main.main(["main"])

  return launch


@pytest.mark.parametrize(
    "error",
    [
        errors.UserError("bad value"),
        errors.MissingInput("no such file"),
        FloatingPointError("diverged"),
        OSError(errno.ENOSPC, "disk full"),
        OSError(errno.EACCES, "permission denied"),
    ],
)
def test_a_user_error_in_run_is_one_line(error, launcher, capsys):
  with pytest.raises(SystemExit) as exit_:
    launcher(error)
  assert exit_.value.code == main.EXIT_ERROR
  assert capsys.readouterr().err == (
      f"{main.error_line(error)}  (--traceback shows where)\n"
  )


@pytest.mark.parametrize(
    "error",
    [
        KeyError("params"),
        RuntimeError("a bug"),
        ValueError("bare"),
        TypeError("a bug"),
        FileNotFoundError(errno.ENOENT, "gone"),
    ],
)
def test_a_bug_in_run_keeps_its_traceback(error, launcher):
  with pytest.raises(type(error)) as raised:
    launcher(error)
  assert raised.value is error


@pytest.mark.slow
def test_grpo_tools_runs_episodes_end_to_end(tmp_path):
  # experiments/configs/grpo_tools.py at the tests' size: the warm start,
  # GRPO over calculator episodes, samples with the tool's answers.
  from experiments.configs import grpo_tools  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / "tools")
  config = grpo_tools.get_config("tiny")
  assert (config.environment, config.sampling.max_new_tokens) == (
      "calculator",
      96,
  )
  results = main.run(config, workdir)
  assert "greedy_acc" in results["final"]
  with open(os.path.join(workdir, "samples.jsonl")) as f:
    texts = [json.loads(line)["text"] for line in f]
  # Every call the policy closed was answered by the calculator (all but
  # a last one cut by the budget or max_turns).
  calls = [t for t in texts if ")" in t]
  assert calls
  for text in calls:
    answered = re.findall(r"\)=(\?|-?[0-9.]+)", text)
    assert answered and text.count(")") - len(answered) <= 1, text
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert any(r.get("source_episode_tool_calls", 0) > 0 for r in rows)
