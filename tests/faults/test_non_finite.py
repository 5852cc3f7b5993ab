"""A diverged update is never applied or saved, and the run resumes from
the checkpoint before it."""

import jax
import numpy as np
import pytest

from experiments import main
from tests.helpers import sharded_step
from tests.helpers import train_util
from ugrad.runtime import gradlog
from ugrad.training import trainer as trainer_lib
from ugrad.training import update as update_lib

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _grpo(sft_dir, steps, lr=1e-4):
  config = train_util.tiny("grpo", steps=steps, init_from=sft_dir)
  config.optim.lr = lr
  # A dense reward: a barely trained policy earns no rule reward, and with
  # every reward equal its gradient is zero and nothing could diverge.
  config.reward = sharded_step.LENGTH_REWARD
  return config


def test_huge_lr_stops_before_the_nan_gradient_is_saved(sft_dir, tmp_path):
  """The issue's case: at lr 1e30 step 2's loss is finite but its gradient
  norm is NaN; it used to become checkpoint 2."""
  config = _grpo(sft_dir, steps=4, lr=1e30)
  with pytest.raises(FloatingPointError) as stop:
    main.run(config, str(tmp_path))
  line = main.error_line(stop.value)
  assert "grad_norm is nan at step 2" in line and "\n" not in line
  assert "last good checkpoint is step 1" in line
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  assert trainer.start_step == 1
  assert update_lib.all_finite(trainer.state)
  assert gradlog.main(["verify", str(tmp_path)]) == 0


def _diverging_at(trainer, update: int):
  """Makes the trainer's `update`-th update diverge as a huge step does:
  a finite loss, a NaN gradient norm, NaN parameters."""
  real_update, calls = trainer.update, []

  def diverged(params, opt_state, batch):
    calls.append(1)
    params, opt_state, metrics = real_update(params, opt_state, batch)
    if len(calls) == update:
      params = jax.tree.map(lambda v: v * np.nan, params)
      metrics = dict(metrics, grad_norm=metrics["grad_norm"] * np.nan)
    return params, opt_state, metrics

  trainer.update = diverged


def test_a_diverged_update_is_not_applied_and_a_lower_lr_resumes(
    sft_dir, tmp_path
):
  config = _grpo(sft_dir, steps=5)
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  _diverging_at(trainer, 3)
  with pytest.raises(FloatingPointError, match=r"nan at step 3.* step 2 in"):
    trainer.train()
  assert trainer.checkpointer.all_steps() == [1, 2]
  assert update_lib.all_finite(trainer.state["opt_state"])
  config = _grpo(sft_dir, steps=5, lr=5e-5)
  resumed = trainer_lib.Trainer(config, str(tmp_path), allow_config_change=True)
  assert resumed.start_step == 2
  metrics = resumed.train()
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
  assert resumed.checkpointer.all_steps()[-1] == 5
  assert gradlog.main(["verify", str(tmp_path)]) == 0


def test_a_non_finite_state_is_never_checkpointed(sft_dir, tmp_path):
  """A state that went non-finite after a finite update (here: after the
  step, as a critic or a reference reset could) is not saved."""
  trainer = trainer_lib.Trainer(_grpo(sft_dir, steps=3), str(tmp_path))
  real_after_step = trainer.learner.after_step

  def poisoned(state, step):
    state = real_after_step(state, step)
    if step == 1:
      state = dict(
          state, params=jax.tree.map(lambda v: v * np.inf, state["params"])
      )
    return state

  trainer.learner.after_step = poisoned
  with pytest.raises(FloatingPointError, match=r"not finite at step 2"):
    trainer.train()
  assert trainer.checkpointer.all_steps() == [1]
