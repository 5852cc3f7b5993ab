"""LoRA runs (config.lora): only the adapters train, the base is the
reference, the checkpoint holds the adapters and resumes exactly."""

import os

from flax import nnx
import jax
import numpy as np
import pytest

from tests.helpers import sharded_step
from tests.helpers import train_util
from ugrad import errors
from ugrad.models import logprobs
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _config(sft_dir: str, steps: int = 2):
  """Tiny GRPO with rank-4 adapters, a KL term (so the reference is used)
  and a dense reward (a barely trained policy earns no rule reward, so its
  gradients would be zero)."""
  config = train_util.tiny("grpo", steps=steps, init_from=sft_dir)
  config.lora.rank = 4
  config.coef.beta = 0.04
  config.reward = sharded_step.LENGTH_REWARD
  return config


def _pure(state) -> dict:
  return jax.tree.map(np.asarray, nnx.to_pure_dict(state))


def _rows(workdir: str) -> list:
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return [
      {k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS}
      for r in rows
  ]


@pytest.mark.slow
def test_tiny_grpo_trains_only_the_adapters(sft_dir, tmp_path):
  trainer = trainer_lib.Trainer(_config(sft_dir), str(tmp_path))
  learner = trainer.learner
  _, sft = runs.load_model(sft_dir)
  # The trained state and the optimizer's hold the adapters alone.
  adapters_before = _pure(trainer.state["params"])
  assert all(
      v.type is nnx.LoRAParam
      for v in jax.tree.leaves(
          trainer.state["params"], is_leaf=lambda x: isinstance(x, nnx.Variable)
      )
  )
  adapter_size = sum(x.size for x in jax.tree.leaves(adapters_before))
  moments = [x for x in jax.tree.leaves(trainer.state["opt_state"]) if x.ndim]
  assert sum(x.size for x in moments) == 2 * adapter_size
  metrics = trainer.train()
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  after = _pure(trainer.state["params"])
  changed = jax.tree.map(
      lambda a, b: bool((a != b).any()), adapters_before, after
  )
  assert all(jax.tree.leaves(changed))  # Every adapter moved ...
  jax.tree.map(  # ... and the base is the SFT policy's, bit for bit.
      np.testing.assert_array_equal, _pure(learner.frozen), _pure(sft)
  )
  # The sampler ran the adapters: its log-probs are the trainer's.
  for row in _rows(str(tmp_path)):
    assert row["logp_mismatch"] < 1e-5, row
  # The reference is the base (adapters off); the policy is not.
  _, rollout = trainer.rollout(0)
  base = logprobs.token_logprobs(
      nnx.merge(*runs.load_model(sft_dir)),
      rollout.tokens,
      rollout.attention_mask,
  )
  done = np.asarray(rollout.completion_mask, bool)
  np.testing.assert_allclose(
      np.asarray(rollout.logp_ref)[done], np.asarray(base)[done], atol=1e-6
  )
  policy = learner.full(trainer.state["params"])
  adapted = logprobs.token_logprobs(
      nnx.merge(trainer.policy.graphdef, policy),
      rollout.tokens,
      rollout.attention_mask,
  )
  assert np.abs(np.asarray(adapted - base)[done]).max() > 1e-4
  # The saved policy is the merged one, a plain model for init_from.
  saved = nnx.merge(*runs.load_model(str(tmp_path)))
  np.testing.assert_allclose(
      np.asarray(
          logprobs.token_logprobs(saved, rollout.tokens, rollout.attention_mask)
      )[done],
      np.asarray(adapted)[done],
      atol=1e-5,
  )


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_continues_exactly(sft_dir, tmp_path, dropout):
  full = _config(sft_dir, steps=3)
  full.lora.dropout = dropout
  straight = trainer_lib.Trainer(full, str(tmp_path / "a"))
  straight.train()
  short = _config(sft_dir, steps=2)
  short.lora.dropout = dropout
  trainer_lib.Trainer(short, str(tmp_path / "b")).train()
  resumed = trainer_lib.Trainer(full, str(tmp_path / "b"))
  assert resumed.start_step == 2
  # The checkpoint held the adapters and their optimizer state.
  assert set(nnx.to_pure_dict(resumed.state["params"])) == {"layers"}
  resumed.train()
  assert _rows(str(tmp_path / "b")) == _rows(str(tmp_path / "a"))
  # Dropout ran in the update only: once the adapters have moved off
  # B = 0, the sampler's log-probs differ from the update's exactly when it
  # is on.
  mismatch = [r["logp_mismatch"] for r in _rows(str(tmp_path / "a"))]
  assert (mismatch[-1] > 1e-5) if dropout else (max(mismatch) < 1e-5)
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.tree.map(
          np.asarray, (resumed.state["params"], resumed.state["opt_state"])
      ),
      jax.tree.map(
          np.asarray, (straight.state["params"], straight.state["opt_state"])
      ),
  )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rank", -1, "lora.rank must be >= 0"),
        ("alpha", 0.0, "lora.alpha must be > 0"),
        ("dropout", 1.0, r"lora.dropout must be in \[0, 1\)"),
    ],
)
def test_bad_lora_settings_are_one_line_errors(field, value, message):
  config = train_util.tiny("sft")
  config.lora.rank = 4
  config.lora[field] = value
  with pytest.raises(errors.UserError, match=message) as err:
    validate.check_config(config)
  assert "\n" not in str(err.value)


def test_lora_is_refused_for_a_reward_model_run():
  config = train_util.tiny("orm")
  config.lora.rank = 4
  with pytest.raises(errors.UserError, match="LoRA trains a policy run"):
    validate.check_config(config)


def test_a_target_that_matches_nothing_fails_at_start_up(tmp_path):
  config = train_util.tiny("sft")
  config.lora.rank = 4
  config.lora.targets = "no_such_proj"
  with pytest.raises(errors.UserError, match="matches no module") as err:
    trainer_lib.Trainer(config, str(tmp_path))
  assert "layers/0/mlp/up_proj" in str(err.value)


def test_rank_zero_leaves_the_run_unchanged():
  config = train_util.tiny("sft")
  assert config.lora.rank == 0
  assert validate.check_config(config) is None
