"""The shared pieces: KL estimators, advantage estimators, group statistics
and the masked helpers that host (numpy) code shares with the coefficients."""

import jax
import jax.numpy as jnp
import numpy as np

from ugrad import masked
from ugrad.coefficients import advantages
from ugrad.coefficients import groups
from ugrad.coefficients import kl


def test_kl_loss_terms_are_minus_beta_times_the_estimator_derivative(x64):
  x = jnp.linspace(-2.0, 2.0, 9)
  ratio = jnp.exp(-x)  # pi_ref / pi
  textbook = {"k1": x, "k2": 0.5 * x**2, "k3": ratio - jnp.log(ratio) - 1}
  for name, want in textbook.items():
    np.testing.assert_allclose(kl.estimate(name, x, 0.0), want, atol=1e-14)
    derivative = jax.vmap(jax.grad(kl.ESTIMATORS[name]))(x)
    np.testing.assert_allclose(
        kl.loss_coef(name, x, 0.0, 0.3), -0.3 * derivative, atol=1e-14
    )
  # DESIGN.md's k3 form: beta * (pi_ref / pi - 1).
  np.testing.assert_allclose(
      kl.loss_coef("k3", x, 0.0, 0.3), 0.3 * (ratio - 1), atol=1e-14
  )


def test_gae_scan_matches_loop_and_skips_masked_tokens(x64):
  rng = np.random.default_rng(0)
  b, t, gamma, lam = 4, 9, 0.9, 0.7
  rewards, values = rng.normal(size=(b, t)), rng.normal(size=(b, t))
  # Holes inside the completion (e.g. tool output) and an empty row.
  mask = np.array(
      [
          [0, 0, 1, 1, 0, 1, 1, 0, 0],
          [1, 1, 1, 1, 1, 1, 1, 1, 1],
          [0, 0, 0, 0, 0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0, 1, 0, 1, 1],
      ],
      float,
  )
  want = np.zeros((b, t))
  for i in range(b):
    running, next_value = 0.0, 0.0
    for j in reversed(np.nonzero(mask[i])[0]):
      delta = rewards[i, j] + gamma * next_value - values[i, j]
      running = delta + gamma * lam * running
      want[i, j], next_value = running, values[i, j]
  adv, returns = jax.jit(advantages.gae, static_argnums=(3, 4))(
      rewards, values, mask, gamma, lam
  )
  np.testing.assert_allclose(adv, want, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(
      returns, (want + values) * mask, rtol=1e-12, atol=1e-14
  )


def test_group_statistics_follow_ids_not_row_order(x64):
  ids = jnp.array([7, 3, 7, 9, 3, 7, 9, 3], jnp.int32)
  rewards = jnp.array([1.0, 0.0, 0.5, 2.0, 1.0, 0.0, 2.0, 3.0])
  mask = jnp.ones((8, 3)).at[5].set(0.0)  # Row 5 is padding.

  @jax.jit
  def stats(rewards, ids, mask):
    same = groups.same_group(ids, mask)
    frac = groups.zero_signal(rewards, same)
    return (
        groups.normalize(rewards, same),
        groups.leave_one_out(rewards, same),
        frac,
    )

  adv, loo, frac = stats(rewards, ids, mask)
  for rows in ([0, 2], [1, 4, 7]):
    r = np.asarray(rewards)[rows]
    np.testing.assert_allclose(
        adv[np.array(rows)], (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    )
    others = (r.sum() - r) / (len(r) - 1)
    np.testing.assert_allclose(loo[np.array(rows)], r - others)
  assert adv[5] == 0 and loo[5] == 0  # Padding.
  assert adv[3] == 0 and adv[6] == 0  # Group 9 has equal rewards.
  np.testing.assert_allclose(frac, 1 / 3)


def test_token_helpers(x64):
  mask = jnp.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], float)
  x = jnp.arange(12.0).reshape(3, 4)

  @jax.jit
  def helpers(x, mask):
    return (
        advantages.outcome_token_rewards(jnp.array([2.0, 3.0, 5.0]), mask),
        advantages.reverse_cumsum(x, mask),
        advantages.masked_whiten(x, mask),
        advantages.masked_whiten(jnp.full_like(x, 2.5), mask),
    )

  placed, tails, white, flat = helpers(x, mask)
  np.testing.assert_array_equal(
      placed, [[0, 0, 2, 0], [0, 0, 0, 3], [0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(tails, [[0, 3, 2, 0], [22, 18, 13, 7], [0] * 4])
  on = np.asarray(white)[np.asarray(mask) > 0]
  np.testing.assert_allclose([on.mean(), on.var()], [0, 1], atol=1e-12)
  assert np.all(flat == 0)


def test_masked_helpers_agree_on_numpy_and_jax():
  mask = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
  want = np.array(
      [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], bool
  )
  np.testing.assert_array_equal(masked.last_index(mask, np), [2, 3, -1, 0])
  np.testing.assert_array_equal(masked.last_token(mask, np), want)
  np.testing.assert_array_equal(masked.last_token(jnp.asarray(mask)), want)
  # Groups {0, 1} and {2, 3}; only entries at `where` count.
  x = np.array([[1.0, 5.0], [1.0, 1.0], [2.0, 3.0], [np.nan, 2.0]])
  where = np.array([[True, False], [True, True], [True, False], [False, True]])
  ids = np.array([0, 0, 1, 1])
  same = ids[:, None] == ids[None, :]
  for xp in (np, jnp):
    np.testing.assert_array_equal(
        masked.group_all_equal(
            xp.asarray(x), xp.asarray(where), xp.asarray(same), xp
        ),
        [True] * 4,
    )
    np.testing.assert_array_equal(
        masked.group_all_equal(xp.asarray(x), True, xp.asarray(same), xp),
        [False] * 4,
    )
