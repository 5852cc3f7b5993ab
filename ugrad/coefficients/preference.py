"""Paired-preference methods beyond DPO, each exact for the `sequence`
normaliser, on DPO's data (`pair_ids`, `pair_sign`: one chosen +1 and one
rejected -1 row per pair).

With S_i = sum_t logp of row i, a pair loss l_p(S+, S-) averaged over P
pairs has gradient (1/P) sum_p sum_i dl/dS_i grad S_i; the unified loss
with the sequence normaliser averages 2P rows and divides each by |o_i|,
so every token of row i gets GC_i = -2 |o_i| dl/dS_i.

* SimPO (Meng et al. 2024, arXiv 2405.14734): -log sig(beta/|y+| S+ -
  beta/|y-| S- - gamma), no reference.
* IPO (Azar et al. 2023, arXiv 2310.12036): (h - 1/(2 tau))^2, h the
  difference of the log-ratios log pi/pi_ref (summed; averaged with
  `length_normalize`, TRL's choice).
* CPO (Xu et al. 2024, arXiv 2401.08417): -log sig(beta (S+ - S-)) +
  lam * (-S+), the reference-free preference term plus the chosen NLL.
* ORPO (Hong et al. 2024, arXiv 2403.07691): -(1/|y+|) S+ - lam log sig(
  log odds(y+) - log odds(y-)), odds p / (1 - p) of the length-normalised
  probability p = exp(S / |y|).
* KTO (Ethayarajh et al. 2024, arXiv 2402.01306) on unpaired samples
  labelled desirable by the reward (`make_kto_rows`): lam_D (1 - sig(beta
  (r - z))) or lam_U (1 - sig(beta (z - r))), r the summed log-ratio and
  z = max(0, mean r of the mismatched rows), held constant.
"""

import jax
import jax.numpy as jnp

from ugrad import masked
from ugrad import rollout as rollout_lib
from ugrad.coefficients import dpo as dpo_lib
from ugrad.coefficients import groups
from ugrad.coefficients import metrics
from ugrad.coefficients import validation


def pair_fields(**unused) -> set:
  del unused
  return {"pair_ids", "pair_sign"}


def ref_pair_fields(**unused) -> set:
  del unused
  return {"pair_ids", "pair_sign", "logp_ref"}


def kto_fields(**unused) -> set:
  del unused
  return {"rewards", "pair_ids", "pair_sign", "logp_ref"}


def _rows(rollout, logp, name, fields):
  """(mask, |o| [B], S [B], sign [B], same-pair [B, B]) of a pair batch."""
  validation.check(rollout, name, fields, logp)
  mask = rollout.completion_mask
  lengths = masked.masked_count(mask, axis=-1).astype(logp.dtype)
  sums = masked.masked_sum(logp, mask, axis=-1)
  sign = rollout.pair_sign.astype(logp.dtype)
  same = groups.same_group(rollout.pair_ids, mask)
  return mask, lengths, sums, sign, same


def _out(coef_rows, mask, rollout, logp):
  """Row coefficients [B] on every completion token, with the metrics."""
  coef = jnp.where(mask > 0, coef_rows[:, None], 0.0).astype(logp.dtype)
  return coef, metrics.coefficient_metrics(coef, rollout, logp)


def simpo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 2.0,
    gamma: float = 1.0
):
  """SimPO: GC_i = 2 beta sign_i sig(-h), h = beta (S+/|y+| - S-/|y-|) -
  gamma (the row's |o| cancels the length normalisation).

  Args:
    rollout: pairs (`pair_ids`, `pair_sign`).
    logp: [B, T] current log-probs.
    beta: reward scale (the paper's 2.0-2.5).
    gamma: target reward margin (the paper's gamma / beta is 0.5 to 1.6).
  """
  mask, lengths, sums, sign, same = _rows(rollout, logp, "simpo", pair_fields())
  reward = beta * sums / jnp.maximum(lengths, 1)
  h = groups.group_sum(sign * reward, same) - gamma
  scale = dpo_lib.ROWS_PER_PAIR * beta * sign * jax.nn.sigmoid(-h)
  return _out(scale, mask, rollout, logp)


def ipo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    tau: float = 0.1,
    length_normalize: bool = False
):
  """IPO: GC_i = -4 sign_i (h - 1/(2 tau)) (times |o_i| for summed log-ratios).

  Args:
    rollout: pairs with `logp_ref`.
    logp: [B, T] current log-probs.
    tau: the regularisation (TRL's beta).
    length_normalize: average the log-ratios over tokens (TRL's IPO)
      instead of summing them (the paper's).
  """
  mask, lengths, _, sign, same = _rows(rollout, logp, "ipo", ref_pair_fields())
  logratio = masked.masked_sum(logp - rollout.logp_ref, mask, axis=-1)
  if length_normalize:
    logratio = logratio / jnp.maximum(lengths, 1)
  h = groups.group_sum(sign * logratio, same)
  scale = -2 * dpo_lib.ROWS_PER_PAIR * sign * (h - 1.0 / (2.0 * tau))
  if not length_normalize:
    scale = scale * lengths
  return _out(scale, mask, rollout, logp)


def cpo(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 0.1,
    lam: float = 1.0
):
  """CPO: GC_i = 2 |o_i| (beta sign_i sig(-beta (S+ - S-)) + lam 1[chosen]).

  Args:
    rollout: pairs (`pair_ids`, `pair_sign`).
    logp: [B, T] current log-probs.
    beta: inverse temperature of the preference term.
    lam: weight of the chosen response's NLL (summed over its tokens).
  """
  mask, lengths, sums, sign, same = _rows(rollout, logp, "cpo", pair_fields())
  h = beta * groups.group_sum(sign * sums, same)
  chosen = (sign > 0).astype(logp.dtype)
  scale = (
      dpo_lib.ROWS_PER_PAIR
      * lengths
      * (beta * sign * jax.nn.sigmoid(-h) + lam * chosen)
  )
  return _out(scale, mask, rollout, logp)


def orpo(rollout: rollout_lib.Rollout, logp: jax.Array, *, lam: float = 0.1):
  """ORPO: GC_i = 2 (1[chosen] + lam sign_i sig(-h) / (1 - p_i)), h the
  log odds ratio, p_i = exp(S_i / |o_i|) (the |o| of the length-normalised
  terms cancels the normaliser's).

  Args:
    rollout: pairs (`pair_ids`, `pair_sign`).
    logp: [B, T] current log-probs.
    lam: weight of the odds-ratio term (the paper's lambda, TRL's beta).
  """
  mask, lengths, sums, sign, same = _rows(rollout, logp, "orpo", pair_fields())
  mean_logp = sums / jnp.maximum(lengths, 1)
  # log odds = a - log(1 - e^a), a < 0 the mean log-prob.
  log_odds = mean_logp - jnp.log(-jnp.expm1(mean_logp))
  h = groups.group_sum(sign * log_odds, same)
  chosen = (sign > 0).astype(logp.dtype)
  scale = dpo_lib.ROWS_PER_PAIR * (
      chosen + lam * sign * jax.nn.sigmoid(-h) / -jnp.expm1(mean_logp)
  )
  return _out(scale, mask, rollout, logp)


def kto(
    rollout: rollout_lib.Rollout,
    logp: jax.Array,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    threshold: float = 0.5
):
  """KTO: GC_i = (n / m) |o_i| beta sig(u) sig(-u) (lam_D, or -lam_U),
  u = beta (r_i - z), on the m sample rows of n non-empty rows (the
  mismatched rows get 0: z is a stop-gradient constant, as in the paper
  and TRL, estimated over the batch or micro-batch the coefficient sees).

  Args:
    rollout: KTO rows (`sampling.kto`): `pair_sign` +1 on a sample, -1 on
      its mismatched row; `rewards`; `logp_ref`.
    logp: [B, T] current log-probs.
    beta: inverse temperature of the value function.
    desirable_weight: lam_D.
    undesirable_weight: lam_U.
    threshold: a sample is desirable when its reward exceeds it.
  """
  validation.check(rollout, "kto", kto_fields(), logp)
  mask = rollout.completion_mask
  lengths = masked.masked_count(mask, axis=-1).astype(logp.dtype)
  logratio = masked.masked_sum(logp - rollout.logp_ref, mask, axis=-1)
  sample = (rollout.pair_sign > 0) & (lengths > 0)
  mismatched = (rollout.pair_sign < 0) & (lengths > 0)
  z = jnp.sum(jnp.where(mismatched, logratio, 0.0)) / jnp.maximum(
      jnp.sum(mismatched), 1
  )
  z = jax.lax.stop_gradient(jnp.maximum(z, 0.0))
  u = beta * (logratio - z)
  weight = jnp.where(
      rollout.rewards > threshold, desirable_weight, -undesirable_weight
  )
  rows = jnp.sum(lengths > 0) / jnp.maximum(jnp.sum(sample), 1)
  scale = rows * lengths * beta * jax.nn.sigmoid(u) * jax.nn.sigmoid(-u)
  return _out(jnp.where(sample, scale * weight, 0.0), mask, rollout, logp)
