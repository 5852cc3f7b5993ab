"""examples/: methods written outside the package run through the launcher."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from examples.custom_method import batch_baseline
from examples.weighted_reinforce import w_reinforce
import ugrad
from ugrad import coefficients
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from tests.helpers import train_util

_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
_CONFIG = "examples/custom_method/config.py"


@pytest.mark.slow
def test_custom_method_trains_from_its_own_files(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [
      sys.executable,
      "-m",
      "experiments.main",
      f"--config={_CONFIG}:tiny",
      f"--workdir={workdir}",
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      cmd, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in rows)
  # Rule rewards of 16 rows are multiples of 1/16; the concise reward's
  # length cost moves them off that grid.
  mean = rows[0]["reward_mean"] * 16
  assert abs(mean - round(mean)) > 1e-4
  config = runs.read_config(workdir)
  assert config["coef"]["name"] == "batch_baseline"
  assert config["reward"] == "concise"


def test_custom_coefficient_gradient_is_its_objective():
  """The registered coefficient fed to the unified loss has the gradient of
  (1/B) sum_i (r_i - mean r) mean_t log pi(o_it)."""
  batch_baseline.register()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  mask = np.array([[0, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 1]], np.float32)
  rewards = np.array([1.0, 0.0, 0.5], np.float32)
  rollout = ugrad.Rollout(
      tokens=jnp.zeros((3, 4), jnp.int32),
      completion_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards),
  )
  logits = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  record = coefficients.get("batch_baseline")
  assert record.fn is batch_baseline.batch_baseline

  def unified(x):
    coef, _ = record.fn(rollout, x, scale=2.0)
    loss, _ = ugrad.unified_loss(
        x, coef, rollout.completion_mask, record.normalizer, 4
    )
    return loss

  def textbook(x):
    adv = 2.0 * (rewards - rewards.mean())
    per_seq = (x * mask).sum(1) / mask.sum(1)
    return -jnp.mean(adv * per_seq)

  np.testing.assert_allclose(
      jax.grad(unified)(logits), jax.grad(textbook)(logits), rtol=1e-6
  )


# Run in a fresh interpreter: what an import registers shows only there.
_REGISTRATION = """
from examples.custom_method import batch_baseline, concise_reward
from experiments import sweep_file
from ugrad import coefficients, rewards
assert "batch_baseline" not in coefficients.COEFFICIENTS
assert "concise" not in rewards.REWARDS
first = sweep_file.load_config("examples/custom_method/config.py:tiny")
record = coefficients.get("batch_baseline")
again = sweep_file.load_config("examples/custom_method/config.py")
assert coefficients.get("batch_baseline") is record
assert rewards.REWARDS["concise"].fn is concise_reward.concise
assert (first.coef.name, first.reward, first.model) == (
    "batch_baseline", "concise", "tiny")
assert again.model != "tiny" and again.coef.scale == 1.0
print("ok")
"""


def test_registration_happens_in_get_config_once():
  """Importing the example's modules registers nothing; loading its config
  registers the method and the reward, and loading it again is harmless."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _REGISTRATION],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --- W-REINFORCE (examples/weighted_reinforce) ------------------------------


def test_w_reinforce_gradient_is_its_objective():
  """Registered from outside with the token normaliser: the unified loss's
  gradient is that of the paper's weighted log-likelihood, per token."""
  w_reinforce.register()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  record = coefficients.get("w_reinforce")
  assert record.normalizer == "token"
  rng = np.random.default_rng(1)
  mask = np.array([[0, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
  rewards = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
  rollout = ugrad.Rollout(
      tokens=jnp.zeros((4, 4), jnp.int32),
      completion_mask=jnp.asarray(mask, jnp.float32),
      rewards=jnp.asarray(rewards),
  )
  logits = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)

  def unified(x):
    coef, _ = record.fn(rollout, x, lam=0.3)
    return ugrad.unified_loss(x, coef, rollout.completion_mask, "token")[0]

  def paper(x):
    weight = np.where(rewards > 0.5, 0.3, -1.0)[:, None]
    return -jnp.sum(weight * x * mask) / mask.sum()

  np.testing.assert_allclose(
      jax.grad(unified)(logits), jax.grad(paper)(logits), rtol=1e-6
  )


@pytest.mark.slow
def test_w_reinforce_trains_through_the_launcher(tmp_path):
  sft = str(tmp_path / "sft")
  trainer_lib.Trainer(train_util.tiny("sft"), sft).train()
  workdir = str(tmp_path / "run")
  env = dict(os.environ, JAX_PLATFORMS="cpu", WORKDIR=workdir, SFT=sft)
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.main",
          "--config=examples/weighted_reinforce/config.py:tiny",
          f"--workdir={workdir}",
          f"--config.init_from={sft}",
      ],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in rows)
  config = runs.read_config(workdir)
  assert config["coef"]["name"] == "w_reinforce"
  assert config["coef"]["lam"] == 0.1
