"""Edge cases, validation and the registry of coefficients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc
import ugrad
from ugrad import coefficients

# Every coefficient, with REINFORCE++'s group baseline as its own variant.
VARIANTS = [(name, {}) for name in coefficients.COEFFICIENTS] + [
    ("reinforce_pp", dict(baseline=True))
]
GROUP_METHODS = ["grpo", "grpo_process", "dr_grpo", "dapo", "gspo", "rloo"]


def _coef(name, hparams, ro, theta):
  return cc.jitted_coefficient(name, hparams)(ro, theta)


def _trace(name, hparams, ro, theta):
  """Traces the coefficient as jit would, without compiling it."""
  fn = coefficients.make_coefficient(name, **hparams)
  return jax.eval_shape(
      lambda r, th: fn(r, cc.logp_of(th, r.tokens)), ro, theta
  )


def _append_empty_row(ro, theta):
  """Adds a padding row that shares its group and pair ids with row 0."""

  def extend(x):
    return None if x is None else jnp.concatenate([x, x[:1]])

  big = jax.tree.map(extend, ro)
  big = big.replace(completion_mask=big.completion_mask.at[-1].set(0.0))
  return big, jnp.concatenate([theta, theta[:1] + 1.0])


@pytest.mark.parametrize("name,hparams", VARIANTS)
def test_empty_completion_contributes_nothing(x64, name, hparams):
  theta, ro = cc.make_case(40, b=6, t=7, v=5, group_sizes=(2, 4))
  big, big_theta = _append_empty_row(ro, theta)
  coefficients.validate_rollout(name, big, hparams)
  got, coef, metrics = cc.unified_grad(
      name, hparams, big, big_theta, max_len=7, with_aux=True
  )
  want = cc.unified_grad(name, hparams, ro, theta, max_len=7)
  np.testing.assert_allclose(got[:-1], want, rtol=1e-10, atol=1e-14)
  assert np.all(got[-1] == 0)
  assert np.all(np.isfinite(coef)) and np.all(coef[-1] == 0)
  assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", GROUP_METHODS)
def test_all_equal_group_has_zero_advantage(x64, name):
  hparams = dict(beta=0.0)
  theta, ro = cc.make_case(41, b=6, t=7, v=5, group_sizes=(3, 3))
  ids = np.asarray(ro.group_ids)
  flat = ids == ids[0]
  if name == "grpo_process":
    ro = ro.replace(
        step_rewards=jnp.where(
            flat[:, None], 0.5 * ro.step_mask, ro.step_rewards
        )
    )
  else:
    ro = ro.replace(rewards=jnp.where(flat, 0.7, ro.rewards))
  grad, coef, metrics = cc.unified_grad(
      name, hparams, ro, theta, max_len=7, with_aux=True
  )
  assert np.all(np.isfinite(coef)) and np.all(np.isfinite(grad))
  assert np.all(coef[flat] == 0) and np.any(coef[~flat] != 0)
  assert np.all(grad[flat] == 0)
  assert float(metrics["zero_signal_group_frac"]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "name,hparams",
    [
        ("grpo", {}),
        ("grpo_process", {}),
        ("rloo", {}),
        ("dpo", {}),
        ("gspo", dict(clip_eps=0.1)),
        ("reinforce_pp", dict(baseline=True)),
    ],
)
def test_row_order_does_not_matter(x64, name, hparams):
  theta, ro = cc.make_case(43, b=8, t=6, v=4, group_sizes=(3, 2, 3))
  order = np.random.default_rng(0).permutation(8)
  fn = cc.jitted_coefficient(name, hparams)  # One compile for both calls.
  coef, _ = fn(ro, theta)
  shuffled, _ = fn(jax.tree.map(lambda x: x[order], ro), theta[order])
  np.testing.assert_allclose(shuffled, coef[order], rtol=1e-12, atol=1e-14)


# Validation.


def test_group_of_one_is_refused(x64):
  theta, ro = cc.make_case(44, b=5, t=6, v=4, group_sizes=(2, 3))
  ids = np.asarray(ro.group_ids).copy()
  ids[0] = 1234
  ro = ro.replace(group_ids=jnp.asarray(ids))
  for name in GROUP_METHODS:
    with pytest.raises(ValueError, match=r"at least 2 samples.*1234"):
      coefficients.validate_rollout(name, ro)
    with pytest.raises(ValueError, match="1234"):
      coefficients.make_coefficient(name)(ro, cc.logp_of(theta, ro.tokens))


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda ids: None, "needs rollout field.*group_ids"),
        (lambda ids: ids.astype(jnp.float32), "integer dtype"),
        (lambda ids: ids[:, None], r"expected \[B\]"),
        (lambda ids: ids[:-1], r"expected \[B\]"),
    ],
)
def test_malformed_group_ids_fail_at_trace_time(x64, bad, match):
  theta, ro = cc.make_case(45, b=6, t=6, v=4, group_sizes=(3, 3))
  ro = ro.replace(group_ids=bad(ro.group_ids))
  for name in GROUP_METHODS:
    with pytest.raises(ValueError, match=match):
      _trace(name, {}, ro, theta)


def test_malformed_pairs_are_refused(x64):
  _, ro = cc.make_case(46, b=6, t=6, v=4, group_sizes=(6,))
  signs = np.asarray(ro.pair_sign).copy()
  partner = np.nonzero(np.asarray(ro.pair_ids) == ro.pair_ids[0])[0][1]
  signs[partner] = signs[0]
  with pytest.raises(ValueError, match=r"one chosen \(\+1\) and one rejected"):
    coefficients.validate_rollout("dpo", ro.replace(pair_sign=signs))
  ids = np.asarray(ro.pair_ids).copy()
  ids[ids == ids[0]] = ids[-1] if ids[-1] != ids[0] else ids[1]
  with pytest.raises(ValueError, match="exactly one chosen"):
    coefficients.validate_rollout("dpo", ro.replace(pair_ids=ids))
  with pytest.raises(ValueError, match=r"\+1 or -1"):
    coefficients.validate_rollout("dpo", ro.replace(pair_sign=signs * 0.5))


def test_shape_mismatch_is_named(x64):
  theta, ro = cc.make_case(47, b=4, t=6, v=4, group_sizes=(2, 2))
  with pytest.raises(ValueError, match=r"rollout.values has shape"):
    _trace("ppo", {}, ro.replace(values=ro.values[:, :-1]), theta)
  with pytest.raises(ValueError, match=r"rollout.rewards has shape"):
    _trace("grpo", {}, ro.replace(rewards=ro.rewards[:, None]), theta)


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="valid: sft, rft, dpo, ppo, grpo"):
    coefficients.make_coefficient("grpo2")
  with pytest.raises(ValueError, match=r"clip_eps_hi\b.*valid: clip_eps,"):
    coefficients.make_coefficient("grpo", clip_eps_hi=0.3)
  with pytest.raises(ValueError, match="valid: k1, k2, k3"):
    coefficients.make_coefficient("ppo", kl_estimator="k4")
  with pytest.raises(ValueError, match="valid: loss, reward"):
    coefficients.make_coefficient("grpo", kl_in="advantage")
  # Process supervision has no outcome reward to fold a KL into.
  with pytest.raises(ValueError, match=r"kl_in for coefficient 'grpo_proc"):
    coefficients.make_coefficient("grpo_process", kl_in="reward")
  with pytest.raises(ValueError, match="valid: k1, k2, k3"):
    coefficients.make_coefficient("grpo_process", kl_estimator="k4")
  with pytest.raises(ValueError, match=r"valid: \(none\)"):
    coefficients.make_coefficient("sft", beta=0.1)


@pytest.mark.parametrize(
    "name,hparams,want",
    [
        ("sft", {}, set()),
        ("rft", {}, {"rewards"}),
        ("dpo", {}, {"pair_ids", "pair_sign", "logp_ref"}),
        ("ppo", {}, {"values", "rewards", "logp_old"}),
        ("ppo", dict(beta=0.1), {"values", "rewards", "logp_old", "logp_ref"}),
        ("grpo", {}, {"rewards", "group_ids", "logp_ref"}),
        ("grpo", dict(beta=0.0), {"rewards", "group_ids"}),
        (
            "grpo_process",
            {},
            {"step_rewards", "step_mask", "group_ids", "logp_ref"},
        ),
        (
            "grpo_process",
            dict(beta=0.0),
            {"step_rewards", "step_mask", "group_ids"},
        ),
        ("dr_grpo", {}, {"rewards", "group_ids"}),
        ("dapo", {}, {"rewards", "group_ids"}),
        ("gspo", {}, {"rewards", "group_ids"}),
        ("rloo", {}, {"rewards", "group_ids"}),
        ("rloo", dict(beta=0.1), {"rewards", "group_ids", "logp_ref"}),
        ("reinforce_pp", {}, {"rewards", "logp_ref"}),
        (
            "reinforce_pp",
            dict(baseline=True, beta=0.0),
            {"rewards", "group_ids"},
        ),
    ],
)
def test_required_fields_are_exactly_what_is_needed(x64, name, hparams, want):
  assert coefficients.required_fields(name, hparams) == want
  theta, full = cc.make_case(48, b=4, t=5, v=3, group_sizes=(2, 2))
  optional = {f for f in vars(full) if f not in ("tokens", "completion_mask")}
  # Only the required fields: it traces (on-policy without logp_old).
  minimal = full.replace(**{f: None for f in optional - want})
  coef, _ = _trace(name, hparams, minimal, theta)
  assert coef.shape == theta.shape[:2]
  for field in want:
    with pytest.raises(ValueError, match=field):
      _trace(name, hparams, minimal.replace(**{field: None}), theta)


def test_metrics_have_the_same_keys_and_right_values(x64):
  theta, ro = cc.make_case(49, b=6, t=7, v=5, group_sizes=(3, 3))
  for name, hparams in VARIANTS:
    _, metrics = _trace(name, hparams, ro, theta)
    assert sorted(metrics) == sorted(coefficients.METRIC_KEYS), name
    assert all(m.shape == () for m in metrics.values()), name
  coef, metrics = _coef("grpo", dict(kl_estimator="k2"), ro, theta)
  mask = np.asarray(ro.completion_mask) > 0
  on = np.asarray(coef)[mask]
  logp = np.asarray(cc.logp_of(theta, ro.tokens))
  x = (logp - np.asarray(ro.logp_ref))[mask]
  want = dict(
      gc_mean=on.mean(),
      gc_std=on.std(),
      gc_min=on.min(),
      gc_max=on.max(),
      gc_pos_frac=(on > 0).mean(),
      gc_neg_frac=(on < 0).mean(),
      gc_zero_frac=(on == 0).mean(),
      kl=(0.5 * x**2).mean(),
      ratio_mean=np.exp(logp - np.asarray(ro.logp_old))[mask].mean(),
      zero_signal_group_frac=0.0,
  )
  for key, value in want.items():
    np.testing.assert_allclose(
        metrics[key], value, rtol=1e-10, atol=1e-15, err_msg=key
    )
  fn = coefficients.make_coefficient("sft")
  _, sft_metrics = fn(ro.replace(logp_ref=None), cc.logp_of(theta, ro.tokens))
  assert float(sft_metrics["kl"]) == 0.0
  assert float(sft_metrics["ratio_mean"]) == 0.0


def test_validate_rollout_accepts_a_good_batch(x64):
  _, ro = cc.make_case(50, b=6, t=7, v=5, group_sizes=(3, 3))
  for name, hparams in VARIANTS:
    coefficients.validate_rollout(name, ro, hparams)
  assert isinstance(ro, ugrad.Rollout)
