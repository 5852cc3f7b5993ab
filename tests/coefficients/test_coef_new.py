"""CISPO, SimPO, IPO, CPO, ORPO and the k3_ratio KL: the unified gradient
equals the gradient of the objective as written in each paper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import coef_cases as cc
import ugrad

SHAPES = [
    dict(b=6, t=7, v=5, group_sizes=(3, 3), padding="right"),
    dict(b=8, t=9, v=4, group_sizes=(2, 4, 2), padding="left"),
]


def _pairs(ro):
  """(chosen rows, rejected rows), one of each per pair."""
  ids, signs = np.asarray(ro.pair_ids), np.asarray(ro.pair_sign)
  pairs = np.unique(ids)
  pick = lambda s: np.array(
      [np.nonzero((ids == p) & (signs == s))[0][0] for p in pairs]
  )
  return pick(1.0), pick(-1.0)


def _seq(theta, ro, ref=False):
  """(S [B] summed log-probs, or log-ratios with `ref`; |o| [B])."""
  mask = np.asarray(ro.completion_mask)
  logp = cc.logp_of(theta, ro.tokens)
  if ref:
    logp = logp - ro.logp_ref
  return jnp.sum(logp * mask, -1), mask.sum(-1)


def _simpo(theta, ro, beta, gamma):
  s, n = _seq(theta, ro)
  w, l = _pairs(ro)
  h = beta * s[w] / n[w] - beta * s[l] / n[l] - gamma
  return jnp.mean(-jax.nn.log_sigmoid(h))


def _ipo(theta, ro, tau, length_normalize):
  s, n = _seq(theta, ro, ref=True)
  if length_normalize:
    s = s / n
  w, l = _pairs(ro)
  return jnp.mean((s[w] - s[l] - 1 / (2 * tau)) ** 2)


def _cpo(theta, ro, beta, lam):
  s, _ = _seq(theta, ro)
  w, l = _pairs(ro)
  return jnp.mean(-jax.nn.log_sigmoid(beta * (s[w] - s[l])) - lam * s[w])


def _orpo(theta, ro, lam):
  s, n = _seq(theta, ro)
  w, l = _pairs(ro)
  p = jnp.exp(s / n)
  odds = jnp.log(p / (1 - p))
  nll = -s[w] / n[w]
  return jnp.mean(nll - lam * jax.nn.log_sigmoid(odds[w] - odds[l]))


@pytest.mark.parametrize(
    "name,loss,defaults,hparams",
    [
        ("simpo", _simpo, dict(beta=2.0, gamma=1.0), dict()),
        ("simpo", _simpo, dict(beta=2.0, gamma=1.0), dict(beta=2.5, gamma=0.3)),
        ("ipo", _ipo, dict(tau=0.1, length_normalize=False), dict()),
        (
            "ipo",
            _ipo,
            dict(tau=0.1, length_normalize=False),
            dict(tau=0.5, length_normalize=True),
        ),
        ("cpo", _cpo, dict(beta=0.1, lam=1.0), dict()),
        ("cpo", _cpo, dict(beta=0.1, lam=1.0), dict(beta=0.5, lam=0.2)),
        ("orpo", _orpo, dict(lam=0.1), dict()),
        ("orpo", _orpo, dict(lam=0.1), dict(lam=1.0)),
    ],
)
@pytest.mark.parametrize("shape", SHAPES)
def test_preference_methods_match_their_papers(
    x64, name, loss, defaults, hparams, shape
):
  theta, ro = cc.make_case(3, **shape)
  full = dict(defaults, **hparams)
  want = jax.grad(loss)(theta, ro, **full)
  cc.assert_same_grad(cc.unified_grad(name, hparams, ro, theta), want)


def _cispo_objective(theta, ro, eps_high, eps_low=None):
  """MiniMax-M1 Eq. 4: token-mean of sg(clip(rho)) * A * log pi."""
  mask = np.asarray(ro.completion_mask)
  logp = cc.logp_of(theta, ro.tokens)
  rewards = np.asarray(ro.rewards)
  adv = np.zeros(len(rewards))
  for rows in cc.group_rows(ro.group_ids, mask):
    r = rewards[rows]
    adv[rows] = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
  ratio = jnp.exp(logp - ro.logp_old)
  low = 0.0 if eps_low is None else 1 - eps_low
  weight = jax.lax.stop_gradient(jnp.clip(ratio, low, 1 + eps_high))
  return -cc.token_mean(weight * adv[:, None] * logp, mask)


@pytest.mark.parametrize(
    "hparams", [dict(), dict(clip_eps_high=0.2, clip_eps=0.2)]
)
@pytest.mark.parametrize("shape", SHAPES)
def test_cispo_matches_the_paper(x64, shape, hparams):
  theta, ro = cc.make_case(4, off_policy=0.6, **shape)
  eps_high = hparams.get("clip_eps_high", 4.0)
  want = jax.grad(_cispo_objective)(
      theta, ro, eps_high, hparams.get("clip_eps")
  )
  got, coef, metrics = cc.unified_grad(
      "cispo", hparams, ro, theta, with_aux=True
  )
  cc.assert_same_grad(got, want)
  del coef
  if hparams:  # Tight clips clip some tokens, and they keep a gradient.
    assert float(metrics["clip_frac"]) > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_k3_ratio_is_the_ratio_weighted_k3_of_trl(x64, shape):
  """GRPO with beta * (pi / pi_old) * k3(logp - logp_ref) in the loss."""
  theta, ro = cc.make_case(5, **shape)
  beta = 0.1
  mask = np.asarray(ro.completion_mask)
  hp = dict(beta=beta, kl_estimator="k3_ratio")
  base = cc.unified_grad("grpo", dict(beta=0.0), ro, theta)

  def kl_term(th):
    logp = cc.logp_of(th, ro.tokens)
    rho = jnp.exp(logp - ro.logp_old)
    return cc.sequence_mean(
        beta * rho * cc.k_estimate("k3", logp - ro.logp_ref), mask
    )

  want = base + jax.grad(kl_term)(theta)
  cc.assert_same_grad(cc.unified_grad("grpo", hp, ro, theta), want)


def test_k3_ratio_goes_in_the_loss_only():
  from ugrad import coefficients  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match="kl_in must be 'loss'"):
    coefficients.bind_hparams(
        "grpo", dict(kl_estimator="k3_ratio", kl_in="reward")
    )


def _kto_case(seed, shift, **shape):
  """Rows (sample +1, its mismatched row -1) in pairs; the last pair empty;
  `shift` raises the log-ratios (so that z_ref > 0)."""
  b = shape["b"]
  theta, ro = cc.make_case(seed, empty_rows=(b - 2, b - 1), **shape)
  ids = np.arange(b, dtype=np.int32) // 2
  return theta, ro.replace(
      pair_ids=jnp.asarray(ids),
      pair_sign=jnp.asarray(np.tile([1.0, -1.0], b // 2)),
      logp_ref=ro.logp_ref - shift,
  )


def _kto(theta, ro, beta, lam_d, lam_u, threshold, hold_z=True):
  """Ethayarajh et al. 2024, Eq. 8: E[lam_y - v(x, y)], z_ref the clamped
  mean log-ratio of the mismatched pairs, a constant (no gradient)."""
  r, n = _seq(theta, ro, ref=True)
  sign, real = np.asarray(ro.pair_sign), n > 0
  sample, mismatched = (sign > 0) & real, (sign < 0) & real
  z = jnp.maximum(jnp.mean(r[mismatched]), 0.0)
  if hold_z:
    z = jax.lax.stop_gradient(z)
  good = np.asarray(ro.rewards) > threshold
  u = beta * (r - z)
  loss = jnp.where(
      good, lam_d * (1 - jax.nn.sigmoid(u)), lam_u * (1 - jax.nn.sigmoid(-u))
  )
  return jnp.mean(loss[sample])


@pytest.mark.parametrize(
    "hparams,shift",
    [
        (dict(), 0.0),
        (dict(), 1.0),
        (dict(beta=0.5, desirable_weight=1.3, undesirable_weight=0.7), 1.0),
        (dict(threshold=-0.3), 0.5),
    ],
)
@pytest.mark.parametrize("shape", SHAPES)
def test_kto_matches_the_paper(x64, hparams, shift, shape):
  theta, ro = _kto_case(6, shift, **shape)
  full = dict(
      dict(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0),
      threshold=0.5,
  )
  full.update(hparams)
  args = (full["beta"], full["desirable_weight"], full["undesirable_weight"])
  want = jax.grad(_kto)(theta, ro, *args, full["threshold"])
  got, coef, _ = cc.unified_grad("kto", hparams, ro, theta, with_aux=True)
  cc.assert_same_grad(got, want)
  assert not np.asarray(coef)[1::2].any()  # Mismatched rows only give z.
  if shift:  # z_ref > 0 here: letting it carry a gradient would differ.
    moving = jax.grad(_kto)(theta, ro, *args, full["threshold"], hold_z=False)
    assert not np.allclose(moving, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("normalizer", [None, "sequence"])
def test_distill_is_the_reverse_kl_gradient_on_samples(x64, normalizer):
  """Every completion token of a 3-token context, each row weighted by its
  probability under the student: the expected unified gradient is the
  exact gradient of KL(pi || pi_teacher) at that position."""
  rng = np.random.default_rng(7)
  v = 5
  theta = jnp.asarray(rng.normal(size=(1, 2, v)))
  teacher = jax.nn.log_softmax(rng.normal(size=(2, v)))
  tokens = jnp.asarray(np.stack([np.zeros(v), np.arange(v)], 1), jnp.int32)
  mask = jnp.asarray(np.tile([0.0, 1.0], (v, 1)))

  def row_grad(y):
    ro = ugrad.Rollout(
        tokens=tokens[y : y + 1],
        completion_mask=mask[y : y + 1],
        logp_teacher=teacher[None, :, y],
    )
    return cc.unified_grad("distill", {}, ro, theta, normalizer=normalizer)

  probs = jax.nn.softmax(theta[0, 1])
  expected = sum(probs[y] * row_grad(y) for y in range(v))

  def reverse_kl(th):
    logp = jax.nn.log_softmax(th[0, 1])
    return jnp.sum(jnp.exp(logp) * (logp - teacher[1]))

  cc.assert_same_grad(expected, jax.grad(reverse_kl)(theta))


@pytest.mark.parametrize("shape", SHAPES)
def test_distill_is_the_per_token_reverse_kl_surrogate(x64, shape):
  """On any batch: the token mean of sg(log pi_T - log pi) log pi."""
  theta, ro = cc.make_case(8, **shape)
  mask = np.asarray(ro.completion_mask)

  def surrogate(th):
    logp = cc.logp_of(th, ro.tokens)
    signal = jax.lax.stop_gradient(ro.logp_teacher - logp)
    return -cc.token_mean(signal * logp, mask)

  want = jax.grad(surrogate)(theta)
  cc.assert_same_grad(cc.unified_grad("distill", {}, ro, theta), want)
