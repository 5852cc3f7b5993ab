"""The maths of one update: a loss, its gradient, the optimizer.

A loss is `(params, batch) -> (numerator, (denominator, metrics))`: the
unified loss of a coefficient (`policy_loss`), a critic's value regression
(`value_loss`) or a reward model's cross-entropy
(`ugrad.training.reward_models.label_loss`). `make_update` turns any of them
into one
jitted optimizer step with micro-batch accumulation.
"""

import functools
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from ugrad.runtime import distributed
from ugrad import masked
from ugrad.coefficients import corrections
from ugrad import models
from ugrad.models import lora
from ugrad.models import sharding as sharding_lib
from ugrad.loss import unified_loss

# (params, batch) -> (numerator, (denominator, metrics)) of one micro-batch.
LossFn = Callable


def make_update(
    loss_fn: LossFn, optimizer, micro_batches: int, shardings, frozen=None
):
  """The jitted update: (params, opt_state, batch) -> new state, metrics.

  Micro-batches accumulate the numerator and denominator of the loss and the
  gradient of the numerator, and divide by the global denominator once, so
  accumulation gives exactly the full-batch gradient.

  Args:
    loss_fn: see `LossFn`.
    optimizer: an optax transformation.
    micro_batches: splits of the batch's rows, accumulated in a scan.
    shardings: (params, opt_state, replicated) shardings of the outputs.
    frozen: None, or parameters the loss reads but nothing trains (a LoRA
      base, `ugrad.models.lora`): the loss sees them merged with `params`,
      and only `params` get gradients and optimizer state.
  """

  def frozen_loss(params, batch, frozen):
    if frozen is not None:
      params = nnx.merge_state(frozen, params)
    return loss_fn(params, batch)

  def update(params, opt_state, batch, frozen=None):
    value_and_grad = jax.value_and_grad(
        lambda p, b: frozen_loss(p, b, frozen), has_aux=True
    )

    def grad_fn(params, batch):
      value, grads = value_and_grad(params, batch)
      return value, as_moments(grads, param_sh)

    if micro_batches == 1:
      (num, (den, metrics)), grads = grad_fn(params, batch)
    else:
      split = jax.tree.map(
          lambda x: x.reshape(micro_batches, -1, *x.shape[1:]), batch
      )

      def body(carry, micro):
        (num, (den, metrics)), grads = grad_fn(params, micro)
        carry = jax.tree.map(jnp.add, carry, (num, den, grads))
        return carry, metrics

      zeros = (
          0.0,
          0.0,
          as_moments(jax.tree.map(jnp.zeros_like, params), param_sh),
      )
      (num, den, grads), metrics = jax.lax.scan(body, zeros, split)
      metrics = jax.tree.map(jnp.mean, metrics)
    scale = 1.0 / jnp.maximum(den, 1)
    grads = jax.tree.map(lambda g: g * scale, grads)
    metrics = dict(metrics, loss=num * scale, grad_norm=optax.tree.norm(grads))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  param_sh, opt_sh, replicated = shardings
  jitted = jax.jit(
      update,
      donate_argnums=(0, 1),
      out_shardings=(param_sh, opt_sh, replicated),
  )
  if frozen is None:
    return jitted  # A jitted function: `experiments.plan` lowers it.
  # (its `func` with `frozen` as the fourth argument, under LoRA).
  return functools.partial(jitted, frozen=frozen)


def as_moments(grads, param_shardings):
  """`grads` constrained to where the optimizer's moments live
  (`sharding.moment_sharding`), so that data-parallel replicas
  reduce-scatter them instead of all-reducing; as they are where that is
  their parameters' sharding (no constraint: it could change the fusions)."""

  def one(grad, param):
    if not isinstance(param, jax.sharding.NamedSharding):
      return grad
    moment = sharding_lib.moment_sharding(param, grad.shape)
    return (
        grad
        if moment == param
        else jax.lax.with_sharding_constraint(grad, moment)
    )

  if param_shardings is None:
    return grads
  return jax.tree.map(one, grads, param_shardings)


def optimizer_shardings(optimizer, params, replicated):
  """Shardings of `optimizer`'s state for `params` (arrays or
  ShapeDtypeStructs with shardings): each moment where
  `sharding.moment_sharding` puts its parameter's, the rest (counts)
  `replicated`."""
  abstract = jax.eval_shape(optimizer.init, params)
  return optax.tree_map_params(
      optimizer,
      lambda a, p: sharding_lib.moment_sharding(p.sharding, a.shape),
      abstract,
      params,
      transform_non_params=lambda _: replicated,
  )


def init_optimizer(optimizer, params, replicated):
  """`optimizer`'s initial state for `params`, on the mesh as
  `optimizer_shardings` places it."""
  shardings = optimizer_shardings(optimizer, params, replicated)
  return jax.jit(optimizer.init, out_shardings=shardings)(params)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def all_finite(tree) -> bool:
  """Whether every floating-point value in a pytree of (possibly sharded)
  arrays is finite; one reduction and one scalar to the host."""
  return bool(distributed.host_get(_all_finite(tree)))


def policy_loss(
    graphdef,
    coef_fn,
    normalizer: str,
    max_len: int,
    temperature: float = 1.0,
    correction: tuple = ("none", None, None),
) -> LossFn:
  """The unified loss: -sum(stop_gradient(GC) * logp) / N, as a LossFn;
  logp is that of softmax(z / temperature), the distribution sampled.

  `correction` = (name, floor, cap) of a sampler correction: where the
  batch has `logp_sampler`, GC is multiplied by its factor
  (`ugrad.coefficients.corrections`) and its metrics are logged."""

  def loss(params, batch):
    model = nnx.merge(graphdef, params)
    if batch.dropout_seeds is not None:  # LoRA's dropout, training only.
      lora.use_dropout(model, batch.dropout_seeds)
    logp = models.token_logprobs(
        model, batch.tokens, batch.attention_mask, temperature=temperature
    )
    coef, metrics = coef_fn(batch, logp)
    if correction[0] != "none" and batch.logp_sampler is not None:
      factor, more = corrections.factor(
          correction[0],
          batch.logp_old,
          batch.logp_sampler,
          batch.completion_mask,
          *correction[1:],
      )
      coef = coef * factor
      metrics = dict(metrics, **more)
    _, aux = unified_loss(
        logp, coef, batch.completion_mask, normalizer, max_len
    )
    if batch.logp_old is not None:
      metrics["logp_mismatch"] = masked.masked_mean(
          jnp.abs(logp - batch.logp_old), batch.completion_mask
      )
    return aux["numerator"], (aux["denominator"], metrics)

  return loss


def value_predictions(critic, batch) -> jax.Array:
  """[B, T] V(s_t) for the state before token t (the critic scores prefixes
  tokens[:t+1], so the value of the state before token t is at t - 1)."""
  scores = critic(batch.tokens, batch.attention_mask)
  return jnp.pad(scores[:, :-1], ((0, 0), (1, 0)))


def value_loss(graphdef, value_targets, value_clip: float) -> LossFn:
  """A critic's clipped value loss 0.5 max((V - R)^2, (V_clip - R)^2),
  averaged over completion tokens, R = `value_targets(batch)`."""

  def loss(params, batch):
    mask = batch.completion_mask
    returns = value_targets(batch)
    values = value_predictions(nnx.merge(graphdef, params), batch)
    clipped = batch.values + jnp.clip(
        values - batch.values, -value_clip, value_clip
    )
    err = jnp.maximum(
        jnp.square(values - returns), jnp.square(clipped - returns)
    )
    return 0.5 * masked.masked_mean(err, mask), (1.0, {})

  return loss


@functools.partial(jax.jit, static_argnums=(0, 4))
def policy_logprobs(
    graphdef, params, tokens, attention_mask, temperature: float = 1.0
) -> jax.Array:
  """[B, T] token log-probs of a policy at `temperature` (compiled once per
  graph, temperature and shape)."""
  return models.token_logprobs(
      nnx.merge(graphdef, params),
      tokens,
      attention_mask,
      temperature=temperature,
  )
