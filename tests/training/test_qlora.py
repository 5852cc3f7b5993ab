"""QLoRA runs (config.lora.base_dtype): the frozen base is stored quantized,
only the adapters train, the reference is the quantized base, resume is
exact and the saved (merged) policy dequantizes the base."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import sharded_step
from tests.helpers import train_util
from ugrad import errors
from ugrad.models import logprobs
from ugrad.models import quantize
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate

Q_PROJ = ("layers", 0, "self_attn", "q_proj", "kernel")


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _config(sft_dir: str, base_dtype: str, steps: int = 2):
  """Tiny GRPO with rank-4 adapters on a `base_dtype` base, a KL term and
  a dense reward (as tests/training/test_lora.py)."""
  config = train_util.tiny("grpo", steps=steps, init_from=sft_dir)
  config.lora.rank = 4
  config.lora.base_dtype = base_dtype
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


def _logp(graphdef, params, rollout):
  return np.asarray(
      logprobs.token_logprobs(
          nnx.merge(graphdef, params), rollout.tokens, rollout.attention_mask
      )
  )


# The largest |log-prob| change of the SFT policy's own samples when its
# projections are stored quantized (measured: int8 0.00078, nf4 0.0086).
TOLERANCE = {"int8": 0.005, "nf4": 0.1}


@pytest.mark.slow
@pytest.mark.parametrize("base_dtype", ["int8", "nf4"])
def test_tiny_grpo_on_a_quantized_base(sft_dir, tmp_path, base_dtype):
  trainer = trainer_lib.Trainer(_config(sft_dir, base_dtype), str(tmp_path))
  learner = trainer.learner
  plain_graph, sft = runs.load_model(sft_dir)
  # The base is stored quantized: each targeted kernel is its quantized
  # value and scale, and dequantizes close to the SFT kernel.
  frozen = dict(nnx.to_flat_state(learner.frozen))
  qvalue = frozen[Q_PROJ + ("qvalue",)][...]
  assert qvalue.dtype == {"int8": jnp.int8, "nf4": jnp.uint4}[base_dtype]
  assert Q_PROJ not in frozen
  want = quantize.quantize(
      nnx.to_pure_dict(sft)["layers"][0]["self_attn"]["q_proj"]["kernel"],
      base_dtype,
  )
  np.testing.assert_array_equal(np.asarray(qvalue), np.asarray(want.qvalue))
  adapters_before = _pure(trainer.state["params"])
  metrics = trainer.train()
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  changed = jax.tree.map(
      lambda a, b: bool((a != b).any()),
      adapters_before,
      _pure(trainer.state["params"]),
  )
  assert all(jax.tree.leaves(changed))  # Every adapter moved ...
  jax.tree.map(  # ... and the quantized base did not.
      np.testing.assert_array_equal,
      _pure(learner.frozen),
      _pure(nnx.from_flat_state(frozen)),
  )
  for row in _rows(str(tmp_path)):  # The sampler ran the same model.
    assert row["logp_mismatch"] < 1e-5, row
  # The reference is the quantized base with the adapters off: the plain
  # model on the dequantized base.
  _, rollout = trainer.rollout(0)
  done = np.asarray(rollout.completion_mask, bool)
  base = _logp(plain_graph, quantize.dequantized(learner.frozen), rollout)
  np.testing.assert_allclose(
      np.asarray(rollout.logp_ref)[done], base[done], atol=1e-6
  )
  # Within the stated tolerance of the unquantized base.
  error = np.abs(base - _logp(plain_graph, sft, rollout))[done].max()
  print(f"{base_dtype}: max |logp(quantized) - logp(sft)| = {error:.5f}")
  assert 0 < error < TOLERANCE[base_dtype]
  # The saved policy folds the adapters into the dequantized base.
  adapted = _logp(
      trainer.policy.graphdef, learner.full(trainer.state["params"]), rollout
  )
  assert np.abs(adapted - base)[done].max() > 1e-4
  saved = _logp(*runs.load_model(str(tmp_path)), rollout)
  np.testing.assert_allclose(saved[done], adapted[done], atol=1e-5)


@pytest.mark.slow
def test_resume_on_an_nf4_base_continues_exactly(sft_dir, tmp_path):
  full = _config(sft_dir, "nf4", steps=3)
  straight = trainer_lib.Trainer(full, str(tmp_path / "a"))
  straight.train()
  trainer_lib.Trainer(
      _config(sft_dir, "nf4", steps=2), str(tmp_path / "b")
  ).train()
  resumed = trainer_lib.Trainer(full, str(tmp_path / "b"))
  assert resumed.start_step == 2
  resumed.train()
  assert _rows(str(tmp_path / "b")) == _rows(str(tmp_path / "a"))
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
    "rank, base_dtype, message",
    [
        (4, "int4", "lora.base_dtype must be one of"),
        (0, "nf4", "needs lora.rank > 0"),
    ],
)
def test_bad_base_dtypes_are_one_line_errors(rank, base_dtype, message):
  config = train_util.tiny("sft")
  config.lora.rank = rank
  config.lora.base_dtype = base_dtype
  with pytest.raises(errors.UserError, match=message) as err:
    validate.check_config(config)
  assert "\n" not in str(err.value)
