"""KL-to-reference estimators and their two placements, shared by methods.

With x = logp - logp_ref per token (Schulman's k1, k2, k3):

  k1 = x,  k2 = x^2 / 2,  k3 = exp(-x) - 1 + x.

Placed in the LOSS with weight beta, the objective gains -beta * k(x) per
token, whose gradient is -beta * k'(x) * grad logp: the GC term is
-beta * k'(x), i.e. -beta, -beta * x, beta * (exp(-x) - 1).

Placed in the REWARD, the per-token reward gains -beta * k(x_old) with
x_old = logp_old - logp_ref: a constant computed from the sampling policy,
which the advantage estimator then carries to earlier tokens.

`k3_ratio` (TRL's default, `use_bias_correction_kl`) is k3 weighted by the
importance ratio rho = pi / pi_old, so that off-policy samples estimate the
current policy's KL: the loss term -beta * rho * k3(x) has the GC term
-beta * rho * (k3(x) + k3'(x)). On-policy (rho = 1) its value is k3's; it is
placed in the loss only.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ugrad import errors
from ugrad import registry

PLACEMENTS = ("loss", "reward")


def k1(x: jax.Array) -> jax.Array:
  return x


def k2(x: jax.Array) -> jax.Array:
  return 0.5 * jnp.square(x)


def k3(x: jax.Array) -> jax.Array:
  return jnp.expm1(-x) + x


def _k1_grad(x: jax.Array) -> jax.Array:
  return jnp.ones_like(x)


def _k2_grad(x: jax.Array) -> jax.Array:
  return x


def _k3_grad(x: jax.Array) -> jax.Array:
  return -jnp.expm1(-x)


ESTIMATORS = {"k1": k1, "k2": k2, "k3": k3, "k3_ratio": k3}
# d k / d x, written out so the GC term reads like DESIGN.md section 2.
_DERIVATIVES = {
    "k1": _k1_grad,
    "k2": _k2_grad,
    "k3": _k3_grad,
    "k3_ratio": _k3_grad,
}


def check(estimator: str, placement: str) -> None:
  """Raises ValueError for an unknown estimator or placement name."""
  registry.lookup(ESTIMATORS, "kl_estimator", estimator)
  registry.lookup(PLACEMENTS, "kl_in", placement)
  if estimator == "k3_ratio" and placement != "loss":
    raise errors.UserError(
        "kl_estimator 'k3_ratio' weighs the KL by pi / pi_old in the loss: "
        f"kl_in must be 'loss', got {placement!r}"
    )


def estimate(estimator: str, logp: jax.Array, logp_ref: jax.Array) -> jax.Array:
  """Per-token KL estimate k(logp - logp_ref), [B, T]."""
  return ESTIMATORS[estimator](logp - logp_ref)


def loss_coef(
    estimator: str,
    logp: jax.Array,
    logp_ref: jax.Array,
    beta: float,
    logp_old: Optional[jax.Array] = None,
) -> jax.Array:
  """GC term of `-beta * k(logp - logp_ref)` placed in the loss.

  Args:
    estimator: "k1", "k2" or "k3".
    logp: [B, T] current policy log-probs.
    logp_ref: [B, T] reference policy log-probs.
    beta: KL weight.
    logp_old: [B, T] the sampling policy's log-probs, read by "k3_ratio"
      (None: on-policy, rho = 1).

  Returns:
    [B, T] the term to add to GC: -beta * k'(logp - logp_ref), and for
    "k3_ratio" -beta * rho * (k3 + k3')(logp - logp_ref).
  """
  x = logp - logp_ref
  if estimator == "k3_ratio":
    old = jax.lax.stop_gradient(logp) if logp_old is None else logp_old
    return -beta * jnp.exp(logp - old) * (k3(x) + _k3_grad(x))
  return -beta * _DERIVATIVES[estimator](x)


def reward_penalty(
    estimator: str, logp_old: jax.Array, logp_ref: jax.Array, beta: float
) -> jax.Array:
  """Per-token reward term `-beta * k(logp_old - logp_ref)`, [B, T]."""
  return -beta * ESTIMATORS[estimator](logp_old - logp_ref)


def sequence_penalty(
    estimator: str,
    logp_old: jax.Array,
    logp_ref: jax.Array,
    mask: jax.Array,
    beta: float,
) -> jax.Array:
  """[B]: -beta * sum_t k(logp_old - logp_ref) over completion tokens.

  The KL placed in a sequence-level (outcome) reward, as RLOO does.
  """
  penalty = reward_penalty(estimator, logp_old, logp_ref, beta)
  return jnp.sum(jnp.where(mask > 0, penalty, 0.0), axis=-1)
