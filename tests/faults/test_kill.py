"""Fault injection: whole launcher runs killed with SIGKILL at random moments,
then resumed by the same command, end exactly as an uninterrupted run.

Each kill moment is drawn from a seeded generator (the seed is in the test
id), so a failure reproduces. "Exactly" means every metrics.jsonl line
(wall-time keys left out) and every final evaluation are equal, and the
gradient log with its checkpoint records verifies.
"""

import json
import os
import random
import signal
import textwrap
import time

import pytest

from tests.helpers import checkpoint_util
from tests.helpers import launch_util
from ugrad.runtime import gradlog

pytestmark = pytest.mark.slow


def _kill_at(argv, watched, lines, rng):
  """Starts argv, waits until `watched` has `lines` lines, waits a random
  fraction of a second more and SIGKILLs it."""
  proc = launch_util.start(argv)
  launch_util.wait_for_lines(watched, lines, proc)
  time.sleep(rng.uniform(0.0, 0.4))
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "finished before the kill"


def _finish(argv):
  result = launch_util.run(argv)
  assert result.returncode == 0, result.stderr[-3000:]


def _assert_same_run(got, want, metrics_dirs=("",)):
  for sub in metrics_dirs:
    assert launch_util.comparable_metrics(
        os.path.join(got, sub)
    ) == launch_util.comparable_metrics(os.path.join(want, sub)), sub
    assert gradlog.main(["verify", os.path.join(got, sub)]) == 0, sub
  with open(os.path.join(got, "eval.json")) as f, open(
      os.path.join(want, "eval.json")
  ) as g:
    assert _untimed(json.load(f)) == _untimed(json.load(g))


def _untimed(tree):
  """Results without wall-time entries (a reward-model run's final
  metrics include its last step's timers)."""
  if isinstance(tree, dict):
    return {
        k: _untimed(v)
        for k, v in tree.items()
        if "time" not in k and "per_s" not in k
    }
  return tree


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sft")
  _finish(launch_util.command(workdir, "sft", steps=20))
  return str(workdir)


@pytest.fixture(scope="module")
def orm_dir(sft_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("orm")
  _finish(launch_util.command(workdir, "orm", init_from=sft_dir, **_ORM))
  return str(workdir)


_GRPO = {
    "steps": 8,
    "checkpoint_every": 2,
    "sampling.questions": 4,
    "sampling.group_size": 4,
    "sampling.max_new_tokens": 32,
    "warm_start.steps": 20,
    "warm_start.batch_size": 16,
}
_ORM = {
    "steps": 6,
    "checkpoint_every": 2,
    "eval_every": 3,
    "sampling.questions": 2,
    "sampling.group_size": 2,
    "sampling.max_new_tokens": 32,
    "rm.eval_questions": 2,
}


@pytest.mark.parametrize("seed", [1])
def test_policy_run_with_its_warm_start(seed, tmp_path):
  """Killed once in the SFT warm start and once in GRPO; before the last
  start one bit of the newest checkpoint is flipped, so the resume must
  also fall back past it."""
  rng = random.Random(seed)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _finish(launch_util.command(straight, "grpo", **_GRPO))
  argv = launch_util.command(killed, "grpo", **_GRPO)
  _kill_at(
      argv,
      os.path.join(killed, "sft", "metrics.jsonl"),
      rng.randint(3, 15),
      rng,
  )
  # After two checkpoints, so that there is one to fall back to.
  _kill_at(argv, os.path.join(killed, "metrics.jsonl"), rng.randint(5, 7), rng)
  checkpoints = os.path.join(killed, "checkpoints")
  newest = max((n for n in os.listdir(checkpoints) if n.isdigit()), key=int)
  # A kill right after a save leaves it without its manifest (restore then
  # writes one, and could not see a flip made before): record it first.
  checkpoint_util.ensure_manifest(os.path.join(checkpoints, newest))
  checkpoint_util.flip_one_bit(os.path.join(checkpoints, newest))
  _finish(argv)
  _assert_same_run(killed, straight, ("", "sft"))
  assert os.listdir(os.path.join(checkpoints, "corrupt"))


def test_reward_model_run(sft_dir, tmp_path):
  rng = random.Random(3)
  settings = dict(_ORM, init_from=sft_dir)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _finish(launch_util.command(straight, "orm", **settings))
  argv = launch_util.command(killed, "orm", **settings)
  _kill_at(argv, os.path.join(killed, "metrics.jsonl"), rng.randint(2, 4), rng)
  _finish(argv)
  _assert_same_run(killed, straight)


def test_iterative_run_killed_between_iterations(sft_dir, orm_dir, tmp_path):
  """Killed while iteration 1 continues its reward model, then in the
  policy steps after it."""
  rng = random.Random(4)
  settings = dict(
      _GRPO,
      init_from=sft_dir,
      reward="model",
      reward_model=orm_dir,
      **{
          "iterative.iterations": 2,
          "iterative.rm_steps": 3,
          "iterative.replay": 0.1,
      },
  )
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _finish(launch_util.command(straight, "grpo", **settings))
  argv = launch_util.command(killed, "grpo", **settings)
  rm_run = os.path.join(killed, "iterations", "iter_1", "reward_model")
  _kill_at(argv, os.path.join(rm_run, "metrics.jsonl"), 1, rng)
  _kill_at(argv, os.path.join(killed, "metrics.jsonl"), 6, rng)
  _finish(argv)
  _assert_same_run(killed, straight)
  assert launch_util.comparable_metrics(
      rm_run
  ) == launch_util.comparable_metrics(
      os.path.join(straight, "iterations", "iter_1", "reward_model")
  )


_SWEEP = textwrap.dedent("""
    from experiments import sweeps

    def get_sweep(profile):
      sweep = sweeps.profile_settings(profile)
      sweep["seeds"] = [0]
      sweep["runs"] = [{"name": m, "config": sweeps.config_path(m),
                        "overrides": {}} for m in ("grpo", "rloo")]
      return sweep
    """)


def test_sweep_killed_mid_way(tmp_path):
  rng = random.Random(5)
  sweep_file = tmp_path / "tiny_sweep.py"
  sweep_file.write_text(_SWEEP)

  def argv(workdir):
    return launch_util.command(workdir)[:2] + [
        "experiments.sweep",
        f"--sweep={sweep_file}",
        f"--workdir={workdir}",
        "--smoke",
    ]

  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _finish(argv(straight))
  proc = launch_util.start(argv(killed))
  first = os.path.join(killed, "grpo", "seed_0", "metrics.jsonl")
  launch_util.wait_for_lines(first, 1, proc)
  time.sleep(rng.uniform(0.0, 3.0))
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  _finish(argv(killed))
  for name in ("grpo", "rloo"):
    _assert_same_run(
        os.path.join(killed, name, "seed_0"),
        os.path.join(straight, name, "seed_0"),
    )
  with open(os.path.join(killed, "results.csv")) as f, open(
      os.path.join(straight, "results.csv")
  ) as g:
    assert f.read() == g.read()
