"""The learning-rate schedules of `adamw.make_optimizer`."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import train_util
from ugrad.training import adamw
from ugrad.training import validate


def _rates(
    schedule: str, warmup: int, updates: int, final_fraction: float = 0.0
) -> np.ndarray:
  """The rate of each update of a run of `updates` updates (half as many
  steps of two PPO epochs), read off Adam's updates on a constant unit
  gradient: each is -rate * m / (sqrt(v) + eps), m = v = 1 after bias
  correction."""
  config = train_util.tiny("grpo")
  config.steps, config.ppo_epochs, config.minibatches = updates // 2, 2, 1
  config.optim.update(
      lr=1e-2,
      warmup_steps=warmup,
      schedule=schedule,
      final_fraction=final_fraction,
      weight_decay=0.0,
  )
  optimizer = adamw.make_optimizer(config)
  params = jnp.zeros(())
  state = optimizer.init(params)
  rates = []
  for _ in range(updates):
    update, state = optimizer.update(jnp.ones(()), state, params)
    rates.append(-float(update) * (1 + 1e-8))
  return np.array(rates)


def test_cosine_warms_up_then_decays_to_zero_at_the_last_update():
  rates = _rates("cosine", warmup=2, updates=10)
  np.testing.assert_allclose(rates[:3], [0.0, 5e-3, 1e-2], rtol=1e-5)
  # cos over the 8 updates after the warm-up: lr (1 + cos(pi k / 8)) / 2.
  k = np.arange(8)
  np.testing.assert_allclose(
      rates[2:], 1e-2 * (1 + np.cos(np.pi * k / 8)) / 2, rtol=1e-4, atol=1e-9
  )
  assert rates[-1] < 1e-3 and np.all(np.diff(rates[2:]) < 0)


def test_cosine_ends_at_its_final_fraction_of_the_rate():
  rates = _rates("cosine", warmup=2, updates=10, final_fraction=0.25)
  k = np.arange(8)
  np.testing.assert_allclose(
      rates[2:],
      1e-2 * (0.25 + 0.75 * (1 + np.cos(np.pi * k / 8)) / 2),
      rtol=1e-4,
  )


def test_a_final_fraction_outside_a_cosine_or_zero_to_one_is_refused():
  config = train_util.tiny("sft")
  config.optim.update(schedule="constant", final_fraction=0.25)
  with pytest.raises(ValueError, match="set optim.schedule=cosine"):
    validate.check_config(config)
  config.optim.schedule = "cosine"
  validate.check_config(config)
  config.optim.final_fraction = 1.5
  with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
    validate.check_config(config)


def test_constant_stays_at_the_rate_after_the_warm_up():
  np.testing.assert_allclose(
      _rates("constant", warmup=2, updates=6), [0, 5e-3] + [1e-2] * 4, rtol=1e-5
  )
  np.testing.assert_allclose(_rates("constant", 0, 3), [1e-2] * 3, rtol=1e-5)


def test_an_unknown_schedule_is_refused_listing_the_valid_ones():
  config = train_util.tiny("grpo")
  config.optim.schedule = "linear"
  with pytest.raises(ValueError, match="valid: constant, cosine"):
    validate.check_config(config)
