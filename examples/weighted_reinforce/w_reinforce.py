"""W-REINFORCE (Zhu et al. 2025, "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning", arXiv 2506.01347): the likelihood of correct
samples raised with a small weight lam, that of incorrect ones lowered with
weight 1 (lam = 0 is their negative-sample reinforcement, NSR).

The objective, over the batch's completion tokens,
  J = (1 / sum_b |o_b|) sum_b w_b sum_t log pi(o_bt),
  w_b = lam if r_b > threshold else -1,
is the coefficient GC[b, t] = w_b with the `token` normaliser, which the
method declares when it registers: a run that names it trains with that
normaliser unless the config says otherwise.
"""

import functools

import jax
import jax.numpy as jnp

import ugrad

NAME = "w_reinforce"


def w_reinforce_fields(**unused) -> set:
  del unused
  return {"rewards"}


def w_reinforce(
    rollout: ugrad.Rollout,
    logp: jax.Array,
    *,
    lam: float = 0.1,
    threshold: float = 0.5
):
  """GC[b, t] = lam on a correct sample's tokens, -1 on an incorrect one's."""
  weight = jnp.where(rollout.rewards > threshold, lam, -1.0)
  coef = jnp.where(rollout.completion_mask > 0, weight[:, None], 0.0)
  coef = coef.astype(logp.dtype)
  return coef, ugrad.coefficient_metrics(coef, rollout, logp)


@functools.cache  # Once per process: a config may be loaded several times.
def register():
  """Adds `w_reinforce` to ugrad's coefficients under NAME."""
  ugrad.register_coefficient(
      NAME, w_reinforce, fields=w_reinforce_fields, normalizer="token"
  )
