"""Training on the distribution sampled: at a sampling temperature T the
trainer's log-probs are those of softmax(z / T), so the ratio is 1
on-policy; evaluation and the saved model stay untempered."""

import numpy as np

from tests.helpers import train_util
from ugrad.training import build
from ugrad.training import trainer as trainer_lib


def test_ratio_is_one_on_policy_at_temperature_07(tmp_path):
  sft = str(tmp_path / "sft")
  trainer_lib.Trainer(train_util.tiny("sft"), sft).train()
  config = train_util.tiny("grpo", steps=1, init_from=sft)
  config.sampling.temperature = 0.7
  config.ppo_epochs = config.minibatches = 1
  assert build.train_temperature(config) == 0.7
  trainer = trainer_lib.Trainer(config, str(tmp_path / "grpo"))
  metrics = trainer.train()
  # The update's first (only) pass is at the sampling parameters: the
  # sampler's logp_old and the trainer's logp are one distribution's.
  assert metrics["logp_mismatch"] < 1e-5
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, atol=1e-5)
  assert metrics["clip_frac"] == 0.0


def test_temperature_applies_only_to_sampling_sources():
  config = train_util.tiny("sft")
  config.sampling.temperature = 0.7
  assert build.train_temperature(config) == 1.0  # Gold data: untempered.
  config = train_util.tiny("grpo")
  config.sampling.temperature = 0.0  # Greedy samples: untempered.
  assert build.train_temperature(config) == 1.0
  config.sampling.temperature = 1
  assert isinstance(build.train_temperature(config), float)
