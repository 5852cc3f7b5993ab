"""Batched sampling with a KV cache: one prefill, then a jitted decode loop.

B prompts, left-padded to a common width P, each get G samples of up to N new
tokens. Rows are prompt-major (row b * G + g, so group id = row // G) and all
decode at the same cache slot, P + i at step i; each row's rotary position
comes from its own prompt length. The cache is carried in the state of a
`lax.while_loop` and written in place; the loop stops early once every row has
emitted EOS. One compilation per (shapes, SamplingConfig, model graph).

`Samples.logp` holds the log-probs of the sampled tokens under the distribution
actually sampled from: temperature-scaled and truncated by top-k / top-p (a
point mass, log-prob 0, under greedy decoding or top-k = 1). Without
truncation they equal the trainer's log-probs, which it takes at the same
temperature (`ugrad.training.build.train_temperature`); they become
`Rollout.logp_old`, and the trainer logs how far they are from the log-probs
it recomputes.
"""

import dataclasses
import functools
from typing import Any, Optional

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ugrad import errors
from ugrad.sampling import layout
from ugrad import registry
from ugrad.models import transformer


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample (hashable: it is a static argument of the jitted sampler).

  Attributes:
    max_new_tokens: N, the completion budget.
    eos_id: the token that ends a completion (kept in it); None: never stop.
    pad_id: the token written after EOS.
    num_samples: G, samples per prompt.
    temperature: 0 means greedy.
    top_k: keep the k most likely tokens; None keeps all.
    top_p: keep the smallest set of most likely tokens whose probability
      reaches p (nucleus sampling); None keeps all.
    cache_layout: "bhsd" ([B, Hkv, S, Dh], the default: attention reads it
      without a transpose) or "bshd" ([B, S, Hkv, Dh]).
    kv_block: the decode loop runs in phases whose cache ends at the
      multiples of kv_block after P, then at P + N (`layout.kv_phases`):
      a step's attention reads the slots up to its phase's end, not all P
      + N. None (or P + N <= kv_block): one phase. The same values (the
      slots left out are masked), up to the order of a sum.
  """

  max_new_tokens: int
  eos_id: Optional[int]
  pad_id: int = 0
  num_samples: int = 1
  temperature: float = 1.0
  top_k: Optional[int] = None
  top_p: Optional[float] = None
  cache_layout: str = "bhsd"
  kv_block: Optional[int] = 256

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise errors.UserError(
          f"max_new_tokens must be >= 1, got " f"{self.max_new_tokens}"
      )
    if self.num_samples < 1:
      raise errors.UserError(
          f"num_samples must be >= 1, got {self.num_samples}"
      )
    if self.temperature < 0:
      raise errors.UserError(
          f"temperature must be >= 0, got {self.temperature}"
      )
    if self.kv_block is not None and self.kv_block < 1:
      raise errors.UserError(
          f"kv_block must be >= 1 or None, got {self.kv_block}"
      )
    if self.top_k is not None and self.top_k < 1:
      raise errors.UserError(f"top_k must be >= 1 or None, got {self.top_k}")
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise errors.UserError(
          f"top_p must be in (0, 1] or None, got {self.top_p}"
      )
    registry.lookup(
        transformer.CACHE_LAYOUTS, "cache_layout", self.cache_layout
    )
    for name in ("eos_id", "pad_id"):
      value = getattr(self, name)
      if value is not None and value < 0:
        raise errors.UserError(f"{name} must be a token id >= 0, got {value}")


@flax.struct.dataclass
class Samples:
  """Prompts and completions, R = B * G rows, prompt-major.

  Attributes:
    tokens: int32 [R, P + N], the left-padded prompt then the completion,
      pad_id after EOS.
    attention_mask: int32 [R, P + N], 1 on real prompt and completion tokens.
    completion_mask: int32 [R, P + N], 1 on completion tokens (EOS included).
    lengths: int32 [R], completion tokens per row, EOS included.
    logp: float32 [R, P + N], log-prob of each completion token under the
      distribution it was sampled from; 0 off the completion.
  """

  tokens: jax.Array
  attention_mask: jax.Array
  completion_mask: jax.Array
  lengths: jax.Array
  logp: jax.Array


def truncate_logits(
    x: jax.Array, top_k: Optional[int], top_p: Optional[float]
) -> jax.Array:
  """Sets logits x [R, V] outside the top-k / top-p set to -inf.

  Tokens tied with the last kept one are kept too.
  """
  if top_k is not None and top_k < x.shape[-1]:
    kth = jax.lax.top_k(x, top_k)[0][:, -1:]
    x = jnp.where(x >= kth, x, -jnp.inf)
  if top_p is not None and top_p < 1:
    ordered = -jnp.sort(-x, axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The most likely token always has mass_before 0, so it is always kept.
    cut = jnp.min(
        jnp.where(mass_before < top_p, ordered, jnp.inf), axis=-1, keepdims=True
    )
    x = jnp.where(x >= cut, x, -jnp.inf)
  return x


def choose_tokens(logits: jax.Array, key: jax.Array, config: SamplingConfig):
  """Picks one token per row.

  Args:
    logits: [R, V] next-token logits.
    key: PRNG key for this step.
    config: temperature and truncation.

  Returns:
    (int32 [R] tokens, float32 [R] their log-probs under the distribution
    sampled from).
  """
  logits = logits.astype(jnp.float32)
  if config.temperature == 0:
    return (
        jnp.argmax(logits, axis=-1).astype(jnp.int32),
        jnp.zeros(logits.shape[:1], jnp.float32),
    )
  x = truncate_logits(logits / config.temperature, config.top_k, config.top_p)
  return draw(x, key)


def _draw_combine(a, b):
  """Merges two partial results of `draw`'s reduction: a running max m and
  sum of exp(x - m), the sum compensated (s + c, Kahan-Babuska: a
  sequential reduction, as XLA's on a CPU, would otherwise lose about
  2.4e-4 of a 151,936-entry vocabulary's sum), and the best (noisy value,
  index, x) triple, ties to the lower index as argmax breaks them."""
  (m_a, s_a, c_a, n_a, i_a, x_a), (m_b, s_b, c_b, n_b, i_b, x_b) = a, b
  m = jnp.maximum(m_a, m_b)
  shift = jnp.where(m == -jnp.inf, 0.0, m)  # -inf - -inf would be nan
  r_a, r_b = jnp.exp(m_a - shift), jnp.exp(m_b - shift)
  p, q = s_a * r_a, s_b * r_b
  s = p + q
  p_larger = jnp.abs(p) >= jnp.abs(q)
  lost = jnp.where(p_larger, (p - s) + q, (q - s) + p)  # s's rounding error
  c = c_a * r_a + c_b * r_b + lost
  b_wins = (n_b > n_a) | ((n_b == n_a) & (i_b < i_a))
  pick = lambda u, v: jnp.where(b_wins, v, u)
  return m, s, c, pick(n_a, n_b), pick(i_a, i_b), pick(x_a, x_b)


def draw(x: jax.Array, key: jax.Array):
  """(int32 [R] tokens, float32 [R] log-probs): a sample of softmax(x) per
  row of x [R, V] (jax.random.categorical's draw, the same tokens) and
  its log-probability, in one reduction over the vocabulary: argmax of x
  plus Gumbel noise, and log-sum-exp as a running max and rescaled sum,
  so the [R, V] values are read once, not once for the draw and twice
  more for log_softmax's max and sum."""
  noisy = jax.random.gumbel(key, x.shape, x.dtype) + x
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
  parts = (x, jnp.ones_like(x), jnp.zeros_like(x), noisy, index, x)
  init = (-jnp.inf, 0.0, 0.0, -jnp.inf, jnp.iinfo(jnp.int32).max, -jnp.inf)
  init = tuple(jnp.asarray(v, a.dtype) for v, a in zip(init, parts))
  m, s, c, _, token, picked = jax.lax.reduce(parts, init, _draw_combine, (1,))
  return token, picked - m - jnp.log(s + c)


def write_column(buf: jax.Array, column: jax.Array, col) -> jax.Array:
  return jax.lax.dynamic_update_slice(
      buf, column[:, None].astype(buf.dtype), (0, col)
  )


def in_compute_dtype(graphdef: nnx.GraphDef, params: Any) -> Any:
  """Every floating parameter in the model's compute dtype (`dtype`).

  Each use casts its weight to that dtype anyway (the projections, the
  embedding, the norms' scales, the output projection), so the values the
  model computes with are the same; cast once per sampling call, outside
  the decode loop, the loop reads weights at compute width instead of
  reading float32 masters and converting them at every step.
  """
  dtype = jnp.dtype(nnx.merge(graphdef, params).config.dtype)
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      params,
  )


def prefill(model, prompt_tokens, prompt_mask, config: SamplingConfig, slots):
  """The prompts' prefill into a cache of `slots` slots, repeated for the G
  samples of each prompt (they share it).

  Returns:
    (cache, [R, V] next-token logits, int32 [R, P + N] kv_mask, int32 [R]
    prompt lengths), R = B * G rows, prompt-major.
  """
  b = prompt_tokens.shape[0]
  prompt_mask = prompt_mask.astype(jnp.int32)
  # Slots of generated tokens are marked real up front: causality hides a
  # slot until it is written.
  kv_mask = jnp.pad(
      prompt_mask, ((0, 0), (0, config.max_new_tokens)), constant_values=1
  )
  cache = transformer.init_cache(model.config, b, slots, config.cache_layout)
  h, cache = model.hidden_cached(
      prompt_tokens,
      transformer.positions_from_mask(prompt_mask),
      kv_mask[:, :slots],
      cache,
      0,
  )
  logits = model.logits(h[:, -1])
  cache, logits, kv_mask, prompt_len = jax.tree.map(
      lambda x: jnp.repeat(x, config.num_samples, axis=0),
      (cache, logits, kv_mask, jnp.sum(prompt_mask, axis=-1)),
  )
  return cache, logits, kv_mask, prompt_len


def _sample(
    graphdef, params, prompt_tokens, prompt_mask, key, config: SamplingConfig
) -> Samples:
  """The traced sampler; see `sample`."""
  model = nnx.merge(graphdef, in_compute_dtype(graphdef, params))
  b, p = prompt_tokens.shape
  n, g = config.max_new_tokens, config.num_samples
  phases = layout.kv_phases(p, n, config.kv_block)
  cache, logits, kv_mask, prompt_len = prefill(
      model, prompt_tokens, prompt_mask, config, phases[0]
  )
  prompt_mask = prompt_mask.astype(jnp.int32)

  def per_sample(x):
    return jnp.repeat(x, g, axis=0)

  rows = b * g
  state = {
      "i": jnp.zeros((), jnp.int32),
      "tokens": jnp.concatenate(
          [
              per_sample(prompt_tokens).astype(jnp.int32),
              jnp.full((rows, n), config.pad_id, jnp.int32),
          ],
          axis=1,
      ),
      "logp": jnp.zeros((rows, p + n), jnp.float32),
      "completion": jnp.zeros((rows, p + n), jnp.int32),
      "done": jnp.zeros((rows,), bool),
      "logits": logits,
      "cache": cache,
  }

  def emit(state):
    """Samples token i of every live row and records it."""
    token, logp = choose_tokens(
        state["logits"], jax.random.fold_in(key, state["i"]), config
    )
    live = ~state["done"]
    token = jnp.where(live, token, config.pad_id)
    col = p + state["i"]
    done = state["done"]
    if config.eos_id is not None:
      done = done | (token == config.eos_id)
    return token, {
        **state,
        "tokens": write_column(state["tokens"], token, col),
        "logp": write_column(state["logp"], jnp.where(live, logp, 0.0), col),
        "completion": write_column(state["completion"], live, col),
        "done": done,
    }

  def step(state, slots):
    token, state = emit(state)
    i = state["i"]
    h, cache = model.hidden_cached(
        token[:, None],
        (prompt_len + i)[:, None],
        kv_mask[:, :slots],
        state["cache"],
        p + i,
    )
    return {
        **state,
        "i": i + 1,
        "logits": model.logits(h[:, 0]),
        "cache": cache,
    }

  def keep_going(state, slots):
    last = min(n - 1, slots - p)  # Steps of this phase: i < last.
    return (state["i"] < last) & ~jnp.all(state["done"])

  for phase, slots in enumerate(phases):
    if phase:
      state = {**state, "cache": layout.grow_cache(state["cache"], slots)}
    state = jax.lax.while_loop(
        functools.partial(keep_going, slots=slots),
        functools.partial(step, slots=slots),
        state,
    )
  _, state = emit(state)
  completion = state["completion"]
  prompt_part = jnp.pad(per_sample(prompt_mask), ((0, 0), (0, n)))
  return Samples(
      tokens=state["tokens"],
      attention_mask=prompt_part + completion,
      completion_mask=completion,
      lengths=jnp.sum(completion, axis=-1),
      logp=state["logp"],
  )


_sample_jit = jax.jit(_sample, static_argnums=(0, 5))


def sample(
    graphdef: nnx.GraphDef,
    params: Any,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    config: SamplingConfig,
) -> Samples:
  """Samples `config.num_samples` completions for each prompt.

  Compiled once per (graphdef, config, shapes, dtypes); later calls with new
  parameters, prompts or keys reuse the compiled program.

  Args:
    graphdef: from `nnx.split(model, ...)` of a `Transformer`.
    params: the matching state (e.g. the `nnx.Param` state).
    prompt_tokens: int [B, P] prompts, LEFT-padded.
    prompt_mask: [B, P], 1 on real prompt tokens; the last column must be
      real in every row.
    key: PRNG key; equal keys give equal samples.
    config: see `SamplingConfig`.

  Returns:
    `Samples` of B * G rows, row b * G + g being sample g of prompt b.
  """
  if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_mask.shape:
    raise errors.UserError(
        f"prompt_tokens {prompt_tokens.shape} and prompt_mask "
        f"{prompt_mask.shape} must both be [B, P]"
    )
  # Checked where the mask is concrete and whole on this host (a multi-host
  # global array was checked on the host before it was placed).
  if not isinstance(prompt_mask, jax.core.Tracer) and getattr(
      prompt_mask, "is_fully_addressable", True
  ):
    last = np.asarray(prompt_mask)[:, -1]
    if not np.all(last > 0):
      bad = np.flatnonzero(last <= 0).tolist()
      raise errors.UserError(
          f"prompts must be left-padded with a real token in the "
          f"last column; rows {bad} are not"
      )
  return _sample_jit(graphdef, params, prompt_tokens, prompt_mask, key, config)
