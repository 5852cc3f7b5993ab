"""Two JAX processes x 2 CPU devices (gloo collectives) train like one
process with 4 devices, survive kill -9 and resume, and leave one record;
with LoRA adapters too, stopped by a preemption notice and resumed."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ugrad.runtime import gradlog
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import lora_config
from ugrad.training import runs

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
STEPS = 8


LR = 1e-4  # the example config's
# LoRA's flags: rank-4 adapters (the base frozen) at a rate that moves them.
LORA_LR = 1e-3
LORA = ("--config.lora.rank=4", f"--config.optim.lr={LORA_LR}")


def _flags(workdir, extra=()):
  # The example method: its reward (rule minus a length cost) is dense, so
  # every step has a real gradient even though the tiny policy is never
  # right, and a method registered from outside the package runs too.
  return [
      "--config=examples/custom_method/config.py",
      f"--workdir={workdir}",
      "--config.model=tiny",
      f"--config.steps={STEPS}",
      "--config.quiet=True",
      "--config.sampling.questions=4",
      "--config.sampling.group_size=4",
      "--config.sampling.max_new_tokens=32",
      "--config.eval_questions=8",
      "--config.warm_start.steps=4",
      "--config.warm_start.batch_size=16",
      "--config.checkpoint_every=1",
      *extra,
  ]


def _env(local_devices):
  return dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count=" f"{local_devices}",
  )


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, log_dir, extra=()):
  port = _free_port()
  procs = []
  for i in range(2):
    log = open(os.path.join(log_dir, f"p{i}.log"), "ab")  # pylint: disable=consider-using-with
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.main",
                *_flags(workdir, extra),
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=_REPO,
            env=_env(2),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
  return procs


def _steps_logged(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for _ in f)


def _wait_for_steps(procs, workdir, log_dir, steps):
  """Until the processes have logged `steps` steps (all still alive)."""
  deadline = time.time() + 900
  while _steps_logged(workdir) < steps and time.time() < deadline:
    assert all(p.poll() is None for p in procs), _tail(log_dir)
    time.sleep(0.2)


def _finish(workdir, log_dir, extra=()):
  """Launches both processes again and waits for a clean end."""
  procs = _launch(workdir, log_dir, extra)
  for p in procs:
    assert p.wait(timeout=900) == 0, _tail(log_dir)


def _tail(log_dir):
  out = []
  for i in range(2):
    with open(os.path.join(log_dir, f"p{i}.log"), errors="replace") as f:
      text = f.read()
    # The first traceback (the cause), then the end (what the process did).
    first = text.find("Traceback (most recent call last)")
    cause = text[first : first + 3000] + "\n[...]\n" if first >= 0 else ""
    out.append(f"p{i}: {cause}{text[-2000:]}")
  return "\n---\n".join(out)


# Continuous metrics (fractions such as gc_pos_frac jump when a coefficient
# near 0 changes sign at rounding level).
COMPARED = (
    "loss",
    "grad_norm",
    "reward_mean",
    "reward_std",
    "response_length",
    "gc_mean",
    "gc_std",
)


def _one_process(workdir, extra=()):
  """The same run in one process with 4 devices."""
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", *_flags(workdir, extra)],
      cwd=_REPO,
      env=_env(4),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_kill(tmp_path):
  ref = str(tmp_path / "ref")
  _one_process(ref)

  work, logs = str(tmp_path / "multi"), str(tmp_path)
  procs = _launch(work, logs)
  _wait_for_steps(procs, work, logs, 2)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  killed_at = _steps_logged(work)
  assert 2 <= killed_at < STEPS, killed_at

  _finish(work, logs)
  _assert_same_run(work, ref, LR)


def _assert_same_run(work, ref, lr):
  """`work` (two processes, resumed) trained as `ref` (one) did."""
  got = metrics_lib.read_metrics(os.path.join(work, "metrics.jsonl"))
  want = metrics_lib.read_metrics(os.path.join(ref, "metrics.jsonl"))
  assert [r["step"] for r in got] == list(range(1, STEPS + 1))
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in COMPARED:
      np.testing.assert_allclose(
          a[key],
          b[key],
          rtol=1e-3,
          atol=1e-6,
          err_msg=f"step {a['step']} {key}",
      )
  assert gradlog.verify(os.path.join(work, "gradient_log.jsonl")).ok
  with open(os.path.join(work, runs.EVAL_FILE)) as f:
    assert set(json.load(f)) == {"sft", "final"}
  # The trained parameters (a LoRA run's adapters). A sanity bound: Adam
  # moves a parameter by up to about lr per step whatever its gradient's
  # size, so reduction-order noise in near-zero gradients can differ by up
  # to 2 lr per step.
  for a, b in zip(_trained(work), _trained(ref)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2 * lr * STEPS)


def _trained(workdir) -> list:
  """The final trained parameters: the adapters of a LoRA run, else the
  policy's, as numpy arrays."""
  config = runs.read_config(workdir)
  if config.lora.rank:
    tree = runs.load_adapters(workdir, lora_config.lora_spec(config))
  else:
    _, tree = runs.load_model(workdir)
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.slow
def test_sigterm_to_one_process_saves_the_same_step_on_both(tmp_path):
  """A preemption notice reaches one worker; JAX's preemption sync point
  names one step to every process, both save it and exit 75, and the same
  command resumes to the end. With LoRA: the adapters, sharded over both
  processes, and their optimizer state resume, and the run ends as one
  process's."""
  work, logs = str(tmp_path / "multi"), str(tmp_path)
  procs = _launch(work, logs, LORA)
  _wait_for_steps(procs, work, logs, 2)
  procs[1].send_signal(signal.SIGTERM)
  codes = [p.wait(timeout=900) for p in procs]
  assert codes == [75, 75], _tail(logs)
  with open(os.path.join(logs, "p0.log"), errors="replace") as f:
    stopped = int(re.search(r"after step (\d+) of", f.read()).group(1))
  assert stopped < STEPS
  assert _steps_logged(work) == stopped
  assert str(stopped) in os.listdir(os.path.join(work, "checkpoints"))
  _finish(work, logs, LORA)
  assert gradlog.main(["verify", work]) == 0
  ref = str(tmp_path / "ref")
  _one_process(ref, LORA)
  assert os.path.isdir(os.path.join(work, runs.ADAPTER_DIR))
  _assert_same_run(work, ref, LORA_LR)
