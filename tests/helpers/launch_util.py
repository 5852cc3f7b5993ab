"""The launcher (`python -m experiments.main`) in a subprocess, for tests
that kill, signal or race whole runs."""

import os
import subprocess
import sys
import time

from ugrad.runtime import metrics as metrics_lib

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def command(workdir, config: str = "sft", steps: int = 40, **overrides):
  """The launcher's argv for a small CPU run of experiments/configs/CONFIG."""
  settings = dict(
      model="tiny",
      steps=steps,
      batch_size=16,
      checkpoint_every=5,
      eval_questions=8,
      quiet=True,
  )
  settings.update(overrides)
  return [
      sys.executable,
      "-m",
      "experiments.main",
      f"--config=experiments/configs/{config}.py",
      f"--workdir={workdir}",
  ] + [f"--config.{k}={v}" for k, v in settings.items()]


def start(argv, **kwargs) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      argv,
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      **kwargs,
  )


def run(argv, timeout: float = 600) -> subprocess.CompletedProcess:
  proc = start(argv)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_for_lines(path, lines: int, proc, timeout: float = 300):
  """Waits until `path` has `lines` lines (or the process ended)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= lines:
          return
    time.sleep(0.05)
  raise AssertionError(
      f"{path} never reached {lines} lines " f"(process returned {proc.poll()})"
  )


def comparable_metrics(workdir) -> list[dict]:
  """metrics.jsonl without the wall-time keys, which differ between runs."""
  return [
      {k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
      for r in metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  ]
