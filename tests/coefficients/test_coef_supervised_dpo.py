"""SFT, RFT and DPO: the unified gradient equals the textbook gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc

SHAPES = [
    dict(b=6, t=7, v=5, group_sizes=(3, 3), padding="right"),
    dict(b=8, t=9, v=4, group_sizes=(2, 4, 2), padding="left"),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_sft_is_the_nll(x64, shape):
  theta, ro = cc.make_case(0, **shape)
  mask = np.asarray(ro.completion_mask)

  def nll(th):
    return cc.sequence_mean(-cc.logp_of(th, ro.tokens), mask)

  cc.assert_same_grad(
      cc.unified_grad("sft", {}, ro, theta), jax.grad(nll)(theta)
  )


@pytest.mark.parametrize("shape", SHAPES)
def test_rft_is_the_nll_of_correct_samples(x64, shape):
  theta, ro = cc.make_case(1, **shape)
  mask = np.asarray(ro.completion_mask)
  correct = (np.asarray(ro.rewards) > 0).astype(float)[:, None]
  assert 0 < correct.sum() < len(correct)

  # DeepSeekMath's RFT: E over all samples of 1[o correct] * 1/|o| sum logp.
  def loss(th):
    return cc.sequence_mean(-correct * cc.logp_of(th, ro.tokens), mask)

  cc.assert_same_grad(
      cc.unified_grad("rft", {}, ro, theta), jax.grad(loss)(theta)
  )


def _dpo_loss(theta, ro, beta, length_normalize, label_smoothing):
  """Rafailov et al.'s loss, mean over pairs; cDPO when label_smoothing > 0."""
  mask = np.asarray(ro.completion_mask)
  ids, signs = np.asarray(ro.pair_ids), np.asarray(ro.pair_sign)
  pairs = np.unique(ids)
  chosen = np.array([np.nonzero((ids == p) & (signs > 0))[0][0] for p in pairs])
  rejected = np.array(
      [np.nonzero((ids == p) & (signs < 0))[0][0] for p in pairs]
  )
  implicit = jnp.sum((cc.logp_of(theta, ro.tokens) - ro.logp_ref) * mask, -1)
  if length_normalize:
    implicit = implicit / mask.sum(-1)
  d = beta * (implicit[chosen] - implicit[rejected])
  return jnp.mean(
      -(1 - label_smoothing) * jax.nn.log_sigmoid(d)
      - label_smoothing * jax.nn.log_sigmoid(-d)
  )


@pytest.mark.parametrize(
    "shape,hparams",
    [
        (SHAPES[0], dict()),
        (SHAPES[1], dict()),
        (SHAPES[0], dict(beta=0.5, length_normalize=False)),
        (SHAPES[1], dict(beta=0.3, label_smoothing=0.2)),
    ],
)
def test_dpo_matches_the_paper_loss(x64, shape, hparams):
  theta, ro = cc.make_case(2, **shape)
  full = dict(beta=0.1, length_normalize=True, label_smoothing=0.0)
  full.update(hparams)
  want = jax.grad(_dpo_loss)(theta, ro, **full)
  cc.assert_same_grad(cc.unified_grad("dpo", hparams, ro, theta), want)
