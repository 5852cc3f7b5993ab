"""Sampler corrections on a rollout with a known mismatch, and their place
in the unified loss: a stop-gradient factor on any method's GC."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import train_util
from ugrad import coefficients
from ugrad import errors
from ugrad import models
from ugrad import rollout as rollout_lib
from ugrad.coefficients import corrections
from ugrad.loss import unified_loss
from ugrad.training import build
from ugrad.training import trainer as trainer_lib
from ugrad.training import update as update_lib

# Row 0: per-token ratios pi_train / pi_sampler; row 1: one sequence near 1;
# the last column of row 1 is padding (ratio 50, masked off).
RATIOS = np.array(
    [[0.3, 1.0, 1.5, 3.0, 10.0], [1.0, 1.0005, 0.9995, 1.0, 50.0]]
)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int32)


def _factor(name, **bounds):
  logp_sampler = jnp.asarray(np.log(np.full(RATIOS.shape, 0.2)))
  logp_train = logp_sampler + jnp.log(jnp.asarray(RATIOS))
  return corrections.factor(
      name, logp_train, logp_sampler, jnp.asarray(MASK), **bounds
  )


def test_tis_truncates_the_weight_at_the_cap():
  f, m = _factor("tis")
  np.testing.assert_allclose(
      f, [[0.3, 1.0, 1.5, 2.0, 2.0], [1.0, 1.0005, 0.9995, 1.0, 0.0]], 1e-5
  )
  np.testing.assert_allclose(m["sampler_truncated_frac"], 2 / 9, 1e-6)


def test_mis_masks_tokens_above_the_cap():
  f, m = _factor("mis", cap=2.0)
  np.testing.assert_allclose(
      f, [[0.3, 1.0, 1.5, 0.0, 0.0], [1.0, 1.0005, 0.9995, 1.0, 0.0]], 1e-5
  )
  np.testing.assert_allclose(m["sampler_masked_frac"], 2 / 9, 1e-6)


def test_icepop_masks_both_sides():
  f, m = _factor("icepop")
  np.testing.assert_array_equal(f, [[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
  np.testing.assert_allclose(m["sampler_masked_frac"], 3 / 9, 1e-6)


def test_seq_mask_masks_whole_sequences_outside_the_band():
  f, m = _factor("seq_mask")
  # Row 0's geometric mean is (0.3*1*1.5*3*10)^(1/5) = 1.69: masked; row 1's
  # is 1.0000 (its padding's 50 is not counted): kept.
  np.testing.assert_array_equal(f, [[0, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
  np.testing.assert_allclose(m["sampler_masked_frac"], 5 / 9, 1e-6)


def test_bad_names_and_bounds_are_refused():
  with pytest.raises(errors.UserError, match="valid: none, tis, mis"):
    corrections.bounds("is")
  with pytest.raises(errors.UserError, match="floor < cap"):
    corrections.bounds("icepop", 2.0, 0.5)


_V, _B, _T = 12, 4, 7


def _model_rollout():
  """A tiny model's rollout whose sampler log-probs are off by noise."""
  graphdef, params = nnx.split(
      models.Transformer(models.preset("tiny", _V), rngs=nnx.Rngs(0)), nnx.Param
  )
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, _V, (_B, _T)), jnp.int32)
  mask = jnp.asarray(np.arange(_T)[None] >= 2, jnp.int32) * jnp.ones(
      (_B, 1), jnp.int32
  )
  logp_old = update_lib.policy_logprobs(graphdef, params, tokens, None)
  ro = rollout_lib.Rollout(
      tokens=tokens,
      completion_mask=mask,
      logp_old=logp_old,
      logp_sampler=logp_old + jnp.asarray(rng.normal(0, 0.8, (_B, _T))),
      rewards=jnp.asarray([1.0, 0.0, 1.0, 0.0]),
      group_ids=jnp.asarray([0, 0, 1, 1]),
  )
  return graphdef, params, ro


@pytest.mark.parametrize("name", ["tis", "mis", "icepop", "seq_mask"])
def test_policy_loss_weighs_the_coefficient_by_the_stopped_factor(name):
  """The update's gradient is -1/N sum factor * GC * grad logp, factor a
  constant, for the method that runs (GRPO here)."""
  graphdef, params, ro = _model_rollout()
  coef_fn = coefficients.make_coefficient("grpo", beta=0.0)
  bounds = (0.9, 1.1) if name == "seq_mask" else (0.5, 1.5)
  loss = update_lib.policy_loss(
      graphdef, coef_fn, "sequence", _T, correction=(name,) + bounds
  )
  f, _ = corrections.factor(
      name, ro.logp_old, ro.logp_sampler, ro.completion_mask, *bounds
  )
  on = np.asarray(ro.completion_mask) > 0
  assert np.any(np.asarray(f)[on] != 1.0)  # The correction changes tokens.

  def by_hand(p):
    logp = update_lib.models.token_logprobs(nnx.merge(graphdef, p), ro.tokens)
    coef, _ = coef_fn(ro, logp)
    return unified_loss(logp, coef * f, ro.completion_mask)[1]["numerator"]

  got = jax.grad(lambda p: loss(p, ro)[0])(params)
  want = jax.grad(by_hand)(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  plain = jax.grad(
      lambda p: update_lib.policy_loss(graphdef, coef_fn, "sequence", _T)(
          p, ro
      )[0]
  )(params)
  assert any(
      not np.allclose(a, b, atol=1e-6)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(plain))
  )
  metrics = loss(params, ro)[1][1]
  assert ("sampler_truncated_frac" in metrics) == (name == "tis")


def test_a_top_k_run_reports_the_masked_fraction(tmp_path):
  sft = str(tmp_path / "sft")
  trainer_lib.Trainer(train_util.tiny("sft"), sft).train()
  config = train_util.tiny("grpo", steps=1, init_from=sft)
  config.sampling.temperature = 0.7
  config.sampling.top_k = 2
  config.sampler_correction = "icepop"
  config.sampler_floor = 0.999
  config.sampler_cap = 1.001
  assert build.sampler_correction(config) == ("icepop", 0.999, 1.001)
  metrics = trainer_lib.Trainer(config, str(tmp_path / "grpo")).train()
  # top-k = 2 raises every kept token's probability: pi_train < pi_sampler
  # wherever the top-2 tokens did not already hold all the mass (the tiny
  # model's almost everywhere).
  assert metrics["sampler_masked_frac"] > 0.5
  assert metrics["sampler_ratio_mean"] < 1.0
  # The method's own ratio is against the trainer's recomputed logp_old.
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, atol=1e-5)


def test_a_correction_needs_a_sampling_source():
  config = train_util.tiny("sft")
  config.sampler_correction = "tis"
  with pytest.raises(errors.UserError, match="samples none"):
    trainer_lib.Trainer(config, "/tmp/never_created_ugrad_corr")
