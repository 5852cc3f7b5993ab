"""REINFORCE with a batch-mean baseline: GC = r_i - mean_j r_j on every token.

A method written outside ugrad: one coefficient function, added to ugrad's
registry by `register()`, which the config that uses it calls. The unified
loss with the `sequence` normaliser turns it into the gradient of
(1/B) sum_i (r_i - mean r) (1/|o_i|) sum_t log pi(o_it).
"""

import functools

import jax
import jax.numpy as jnp

import ugrad

NAME = "batch_baseline"


def batch_baseline_fields(**unused) -> set:
  del unused
  return {"rewards"}


def batch_baseline(
    rollout: ugrad.Rollout, logp: jax.Array, *, scale: float = 1.0
):
  """GC[b, t] = scale * (r_b - mean r) on completion tokens."""
  rewards = rollout.rewards.astype(logp.dtype)
  advantage = scale * (rewards - jnp.mean(rewards))
  coef = advantage[:, None] * rollout.completion_mask.astype(logp.dtype)
  return coef, ugrad.coefficient_metrics(coef, rollout, logp)


@functools.cache  # Once per process: a config may be loaded several times.
def register():
  """Adds `batch_baseline` to ugrad's coefficients under NAME.

  Raises:
    ugrad.errors.UserError: when another coefficient already has that name.
  """
  ugrad.register_coefficient(NAME, batch_baseline, fields=batch_baseline_fields)
