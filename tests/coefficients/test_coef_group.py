"""The GRPO family: unified gradients equal the papers' objectives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc

SHAPES = [
    dict(b=6, t=7, v=5, group_sizes=(3, 3), padding="right"),
    dict(b=8, t=9, v=4, group_sizes=(2, 4, 2), padding="left"),
]


def _outcome_advantage(ro, rewards, std_normalize, eps):
  """(r_i - mean_G r) / (std_G r + eps), sample std, one group at a time."""
  adv = np.zeros_like(rewards)
  for rows in cc.group_rows(ro.group_ids, ro.completion_mask):
    r = rewards[rows]
    adv[rows] = r - r.mean()
    if std_normalize:
      adv[rows] /= r.std(ddof=1) + eps
  return adv


def _rewards(ro, beta, kl_estimator, kl_in):
  rewards = np.asarray(ro.rewards).copy()
  if beta and kl_in == "reward":
    x = np.asarray(ro.logp_old - ro.logp_ref)
    rewards -= beta * (
        np.asarray(cc.k_estimate(kl_estimator, x))
        * np.asarray(ro.completion_mask)
    ).sum(-1)
  return rewards


def _grpo_objective(
    theta, ro, adv, eps_low, eps_high, beta, kl_estimator, kl_in
):
  """Per-token min(rho A, clip(rho) A) - beta * D_KL (DeepSeekMath Eq. 3)."""
  logp = cc.logp_of(theta, ro.tokens)
  ratio = jnp.exp(logp - ro.logp_old)
  objective = cc.surrogate(ratio, adv, eps_low, eps_high)
  if beta and kl_in == "loss":
    objective -= beta * cc.k_estimate(kl_estimator, logp - ro.logp_ref)
  return objective, ratio


def _grpo_loss(
    theta,
    ro,
    aggregate,
    std_normalize=True,
    eps=1e-6,
    clip_eps=0.2,
    clip_eps_high=None,
    beta=0.04,
    kl_estimator="k3",
    kl_in="loss",
):
  rewards = _rewards(ro, beta, kl_estimator, kl_in)
  adv = _outcome_advantage(ro, rewards, std_normalize, eps)[:, None]
  high = clip_eps if clip_eps_high is None else clip_eps_high
  objective, ratio = _grpo_objective(
      theta, ro, adv, clip_eps, high, beta, kl_estimator, kl_in
  )
  return -aggregate(objective, np.asarray(ro.completion_mask)), (ratio, adv)


def _check(
    name,
    hparams,
    ro,
    theta,
    aggregate,
    high,
    normalizer=None,
    max_len=None,
    **textbook
):
  want, (ratio, adv) = jax.grad(_grpo_loss, has_aux=True)(
      theta, ro, aggregate, **textbook
  )
  mask = np.asarray(ro.completion_mask)
  clipped = cc.clipped_fraction(ratio, adv, mask, 0.2, high)
  assert 0 < clipped < 0.9  # Off-policy: the clip is active on some tokens.
  got, _, metrics = cc.unified_grad(
      name, hparams, ro, theta, normalizer, max_len, with_aux=True
  )
  cc.assert_same_grad(got, want)
  np.testing.assert_allclose(metrics["clip_frac"], clipped, rtol=1e-12)


@pytest.mark.parametrize(
    "shape,hparams",
    [
        (SHAPES[0], dict()),
        (SHAPES[1], dict()),
        (SHAPES[0], dict(kl_estimator="k1", beta=0.1)),
        (SHAPES[1], dict(kl_estimator="k2", beta=0.1, clip_eps_high=0.3)),
        (
            SHAPES[0],
            dict(kl_in="reward", kl_estimator="k1", beta=0.1, eps=1e-3),
        ),
    ],
)
def test_grpo_outcome_matches_eq3(x64, shape, hparams):
  theta, ro = cc.make_case(20, **shape)
  _check(
      "grpo",
      hparams,
      ro,
      theta,
      cc.sequence_mean,
      hparams.get("clip_eps_high", 0.2),
      **hparams
  )


def _process_advantage(ro, eps):
  """DeepSeekMath 4.1.3: normalise a group's step rewards together, then sum
  the normalised rewards of the steps ending at or after each token; the
  last step ends at the response's last token (index(j) of the last step)."""
  mask = np.asarray(ro.completion_mask)
  steps = np.asarray(ro.step_mask) * mask
  step_r = np.asarray(ro.step_rewards)
  adv = np.zeros_like(mask)
  for rows in cc.group_rows(ro.group_ids, mask):
    values = np.concatenate([step_r[i][steps[i] > 0] for i in rows])
    mean, std = values.mean(), values.std(ddof=1)
    for i in rows:
      at = np.nonzero(steps[i] > 0)[0]
      normed = (step_r[i, at] - mean) / (std + eps)
      ends = at.copy()
      if len(ends):
        ends[-1] = np.nonzero(mask[i])[0][-1]
      for t in np.nonzero(mask[i])[0]:
        adv[i, t] = normed[ends >= t].sum()
  return adv


def _eos_after_last_step(ro):
  """`ro` with each row's last step ending one token before its last
  completion token, as on real completions (the step reward sits on the
  last visible character, the EOS follows)."""
  mask = np.asarray(ro.completion_mask)
  steps = np.asarray(ro.step_mask).copy()
  step_r = np.asarray(ro.step_rewards).copy()
  for i in range(mask.shape[0]):
    cols = np.nonzero(mask[i])[0]
    if len(cols) >= 2 and not steps[i, cols[-2]]:
      steps[i, cols[-2]], step_r[i, cols[-2]] = 1.0, step_r[i, cols[-1]]
      steps[i, cols[-1]], step_r[i, cols[-1]] = 0.0, 0.0
  return ro.replace(
      step_mask=jnp.asarray(steps), step_rewards=jnp.asarray(step_r)
  )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eos_after_last_step", [False, True])
def test_grpo_process_matches_paper(x64, shape, eos_after_last_step):
  theta, ro = cc.make_case(21, **shape)
  if eos_after_last_step:
    ro = _eos_after_last_step(ro)
    # Some rows now have completion tokens after their last step.
    assert any(
        not np.asarray(ro.step_mask)[i, np.nonzero(m)[0][-1]]
        for i, m in enumerate(np.asarray(ro.completion_mask))
        if m.any()
    )
  hparams = dict(beta=0.05)
  adv = _process_advantage(ro, 1e-6)

  def loss(th):
    objective, ratio = _grpo_objective(
        th, ro, adv, 0.2, 0.2, 0.05, "k3", "loss"
    )
    return -cc.sequence_mean(objective, ro.completion_mask), ratio

  want, ratio = jax.grad(loss, has_aux=True)(theta)
  assert 0 < cc.clipped_fraction(ratio, adv, ro.completion_mask, 0.2, 0.2)
  # The step mask must not be the trivial "last token only" one.
  assert (
      np.asarray(ro.step_mask).sum()
      > (np.asarray(ro.completion_mask).sum(-1) > 0).sum()
  )
  cc.assert_same_grad(cc.unified_grad("grpo_process", hparams, ro, theta), want)


@pytest.mark.parametrize("shape", SHAPES)
def test_dr_grpo_matches_constant_normalised_objective(x64, shape):
  theta, ro = cc.make_case(22, **shape)
  l_max = shape["t"]

  def aggregate(objective, mask):
    return cc.constant_mean(objective, mask, l_max)

  _check(
      "dr_grpo",
      {},
      ro,
      theta,
      aggregate,
      0.2,
      max_len=l_max,
      std_normalize=False,
      beta=0.0,
  )


@pytest.mark.parametrize("shape", SHAPES)
def test_dapo_matches_token_level_clip_higher(x64, shape):
  theta, ro = cc.make_case(23, **shape)
  # Put one positive-advantage token between 1 + 0.2 and 1 + 0.28, where
  # clip-higher keeps the gradient that a symmetric clip would drop.
  adv = _outcome_advantage(ro, np.asarray(ro.rewards), True, 1e-6)
  row = int(np.argmax(adv))
  col = int(np.nonzero(np.asarray(ro.completion_mask[row]))[0][0])
  logp = cc.logp_of(theta, ro.tokens)
  ro = ro.replace(
      logp_old=ro.logp_old.at[row, col].set(logp[row, col] - np.log(1.24))
  )
  _check(
      "dapo", {}, ro, theta, cc.token_mean, 0.28, clip_eps_high=0.28, beta=0.0
  )


def _gspo_loss(theta, ro, clip_low, clip_high, eps=1e-6):
  """Zheng et al. Eq. 5: (1/G) sum_i min(s_i A_i, clip(s_i) A_i)."""
  mask = np.asarray(ro.completion_mask)
  adv = _outcome_advantage(ro, np.asarray(ro.rewards), True, eps)
  log_s = jnp.sum(
      (cc.logp_of(theta, ro.tokens) - ro.logp_old) * mask, -1
  ) / mask.sum(-1)
  s = jnp.exp(log_s)
  return -jnp.mean(cc.surrogate(s, adv, clip_low, clip_high)), (s, adv)


@pytest.mark.parametrize(
    "shape,hparams",
    [
        (SHAPES[0], dict()),
        (SHAPES[1], dict()),
        (SHAPES[1], dict(clip_eps=0.05, clip_eps_high=0.1)),
    ],
)
def test_gspo_matches_sequence_level_objective(x64, shape, hparams):
  theta, ro = cc.make_case(24, **shape)
  low = hparams.get("clip_eps", 3e-4)
  high = hparams.get("clip_eps_high", 4e-4)
  # Sequence log-ratios around the clip range, some in and some out, made
  # of token log-ratios that differ along each sequence.
  shifts = np.linspace(-3, 3, shape["b"]) * high
  wiggle = 0.3 * high * np.sin(np.arange(shape["t"]))
  ro = ro.replace(
      logp_old=cc.logp_of(theta, ro.tokens) - shifts[:, None] + wiggle
  )
  want, (s, adv) = jax.grad(_gspo_loss, has_aux=True)(theta, ro, low, high)
  s, adv = np.asarray(s), np.asarray(adv)
  clipped = ((adv > 0) & (s > 1 + high)) | ((adv < 0) & (s < 1 - low))
  assert clipped.any() and (~clipped & (s != 1)).any()
  cc.assert_same_grad(cc.unified_grad("gspo", hparams, ro, theta), want)
