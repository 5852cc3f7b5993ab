"""The multi-turn sampler: episodes of a policy and an environment.

Rows decode in lockstep as in `ugrad.sampling.sampler` (step i writes column
and cache slot P + i; one prefill, the KV cache carried in a `lax.while_loop`),
with two additions:

* A row's policy turn ends when its last sampled tokens are the ids of one
  of the environment's stop strings. The match runs in the loop, on a window
  of the turn's last sampled ids, and the loop exits after the step where any
  row stopped; the host then asks the environment (one call per stopped row),
  and decoding resumes at the next step. No row waits for another: a
  check between fixed chunks of steps would leave the rows that stopped
  early idle until the chunk ends. The ids of a stop string are what the
  tokenizer gives it alone (exact for the embedded character tokenizer; a
  BPE tokenizer that spells it otherwise after some text is not matched).
* An observation's tokens are queued for the row and fed at its next steps
  instead of a sample: each goes into the KV cache at the row's own slot,
  with mask 0 in `completion_mask` and log-prob 0, while the other rows go on
  sampling in the same steps; no history is prefilled again.

Tokens are stored as sampled (never decoded and re-encoded), at the same
positions the trainer gives them (rows are contiguous, left-padded prompts),
so the stored log-probs of policy tokens are the trainer's. The loop ends
once every row is done (EOS, the environment's `done`, `max_turns`, a
failure) or at the budget of N = `max_new_tokens` columns shared by policy
and observation tokens; a row still going then is marked truncated.

An environment that raises ends that row's episode (marked `failed`, its
rewards zeroed by the source) and is logged; more than `max_error_rate` of
the rows failing in one call stops the run with a one-line message.
"""

import dataclasses
import functools
from typing import Any, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ugrad import errors
from ugrad.runtime import distributed
from ugrad.sampling import layout
from ugrad.sampling import prompts as prompts_lib
from ugrad.sampling import sampler as sampler_lib
from ugrad.sampling import turns
from ugrad.tasks import base as tasks_base


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """How episodes run.

  Attributes:
    environment: an `ugrad.environments.Environment`.
    max_turns: the most policy turns of an episode; a turn past it that
      ends at a stop string ends the episode, marked truncated.
    max_error_rate: the largest share of a call's rows whose environment
      may raise before the run stops.
  """

  environment: Any
  max_turns: int = 8
  max_error_rate: float = 0.1

  def __post_init__(self):
    if self.max_turns < 1:
      raise errors.UserError(f"max_turns must be >= 1, got {self.max_turns}")
    if not 0 <= self.max_error_rate <= 1:
      raise errors.UserError(
          f"max_error_rate must be in [0, 1], got {self.max_error_rate}"
      )


@dataclasses.dataclass
class EpisodeCompletions(prompts_lib.Completions):
  """`Completions` of episodes (texts hold the observations too), and per
  row: the environment's turn rewards at each answered turn's last policy
  token (`step_rewards`, `step_mask` [R, P + N]), `turns` (policy turns),
  `calls` (turns the environment answered), `invalid_calls` (answers the
  environment marked `valid=False`), `truncated`, `failed` and
  `prompt_lengths`; and `answer_rounds`, the times the decode loop stopped
  for the environment."""

  step_rewards: Optional[np.ndarray] = None
  step_mask: Optional[np.ndarray] = None
  turns: Optional[np.ndarray] = None
  calls: Optional[np.ndarray] = None
  invalid_calls: Optional[np.ndarray] = None
  truncated: Optional[np.ndarray] = None
  failed: Optional[np.ndarray] = None
  prompt_lengths: Optional[np.ndarray] = None
  answer_rounds: int = 0


def stop_ids(environment, tokenizer) -> tuple:
  """The token ids of each of the environment's stop strings."""
  stops = tuple(tuple(tokenizer.encode(s)) for s in environment.stop_strings)
  if not stops or not all(stops):
    raise errors.UserError(
        "an environment needs at least one non-empty stop string, got "
        f"{list(environment.stop_strings)!r}"
    )
  return stops


def _prefill(graphdef, params, prompt_tokens, prompt_mask, config, stops):
  """The loop state after the prompts' prefill."""
  model = nnx.merge(graphdef, sampler_lib.in_compute_dtype(graphdef, params))
  p, n = prompt_tokens.shape[1], config.max_new_tokens
  slots = layout.kv_phases(p, n, config.kv_block)[0]
  cache, logits, kv_mask, prompt_len = sampler_lib.prefill(
      model, prompt_tokens, prompt_mask, config, slots
  )
  rows, width = logits.shape[0], max(len(s) for s in stops)
  tokens = jnp.repeat(prompt_tokens.astype(jnp.int32), config.num_samples, 0)
  zeros = functools.partial(jnp.zeros, (rows,), jnp.int32)
  return {
      "i": jnp.zeros((), jnp.int32),
      "tokens": jnp.pad(
          tokens, ((0, 0), (0, n)), constant_values=config.pad_id
      ),
      "logp": jnp.zeros((rows, p + n), jnp.float32),
      "completion": jnp.zeros((rows, p + n), jnp.int32),
      "real": jnp.zeros((rows, p + n), jnp.int32),
      "done": jnp.zeros((rows,), bool),
      "stopped": jnp.zeros((rows,), bool),
      "window": jnp.full((rows, width), -1, jnp.int32),
      "queue": jnp.zeros((rows, n), jnp.int32),
      "queued": zeros(),
      "fed": zeros(),
      "logits": logits,
      "cache": cache,
      "kv_mask": kv_mask,
      "prompt_len": prompt_len,
  }


def _emit(state, key, config, stops):
  """Token i of every row: a queued observation token, else a sample."""
  token, logp = sampler_lib.choose_tokens(
      state["logits"], jax.random.fold_in(key, state["i"]), config
  )
  live = ~state["done"]
  forced = live & (state["fed"] < state["queued"])
  queued = jnp.take_along_axis(
      state["queue"],
      jnp.minimum(state["fed"], state["queue"].shape[1] - 1)[:, None],
      1,
  )[:, 0]
  sampled = live & ~forced
  token = jnp.where(forced, queued, jnp.where(live, token, config.pad_id))
  window = jnp.where(
      sampled[:, None],
      jnp.concatenate([state["window"][:, 1:], token[:, None]], 1),
      state["window"],
  )
  hit = jnp.zeros_like(live)
  for stop in stops:
    tail = window[:, window.shape[1] - len(stop) :]
    hit = hit | jnp.all(tail == jnp.asarray(stop, jnp.int32)[None], axis=1)
  done = state["done"]
  if config.eos_id is not None:
    done = done | (sampled & (token == config.eos_id))
  col = state["tokens"].shape[1] - config.max_new_tokens + state["i"]
  write = sampler_lib.write_column
  return token, {
      **state,
      "tokens": write(state["tokens"], token, col),
      "logp": write(state["logp"], jnp.where(sampled, logp, 0.0), col),
      "completion": write(state["completion"], sampled, col),
      "real": write(state["real"], live, col),
      "done": done,
      "stopped": sampled & hit & ~done,
      "window": window,
      "fed": state["fed"] + forced,
  }


def _decode(graphdef, params, state, key, config, stops, slots, final):
  """Runs steps until the phase of `slots` slots ends, every row is done or
  a row stopped; with `final`, only emits the last column's token."""
  model = nnx.merge(graphdef, sampler_lib.in_compute_dtype(graphdef, params))
  p = state["tokens"].shape[1] - config.max_new_tokens
  if final:
    return _emit(state, key, config, stops)[1]

  def step(state):
    token, state = _emit(state, key, config, stops)
    i = state["i"]
    h, cache = model.hidden_cached(
        token[:, None],
        (state["prompt_len"] + i)[:, None],
        state["kv_mask"][:, :slots],
        state["cache"],
        p + i,
    )
    return {
        **state,
        "i": i + 1,
        "logits": model.logits(h[:, 0]),
        "cache": cache,
    }

  last = min(config.max_new_tokens - 1, slots - p)

  def keep_going(state):
    return (
        (state["i"] < last)
        & ~jnp.all(state["done"])
        & ~jnp.any(state["stopped"])
    )

  return jax.lax.while_loop(keep_going, step, state)


_prefill_jit = jax.jit(_prefill, static_argnums=(0, 4, 5))
_decode_jit = jax.jit(_decode, static_argnums=(0, 4, 5, 6, 7), donate_argnums=2)
_grow_jit = jax.jit(layout.grow_cache, static_argnums=1)


def _answer_stopped(state, rows: turns.EpisodeRows, p: int):
  """The environment's answers to the rows that stopped: their observations
  queued, ended episodes marked done; the state back on its devices."""
  names = ("stopped", "done", "window", "queue", "queued", "fed")
  host = distributed.host_get({k: state[k] for k in names + ("i", "tokens")})
  fresh = {k: np.array(host[k]) for k in names}
  col = p + int(host["i"])
  room = host["tokens"].shape[1] - col
  for r in np.flatnonzero(host["stopped"]):
    obs, ended = rows.answer(int(r), host["tokens"][r], col)
    if len(obs) > room:
      obs, rows.truncated[r] = obs[:room], True
    fresh["done"][r] |= ended
    fresh["queue"][r] = 0
    fresh["queue"][r, : len(obs)] = obs
    fresh["queued"][r], fresh["fed"][r] = len(obs), 0
    fresh["window"][r] = -1
  fresh["stopped"][:] = False
  placed = {
      k: distributed.put_global(v, state[k].sharding) for k, v in fresh.items()
  }
  return {**state, **placed}


def sample_episodes(
    graphdef,
    params,
    prompts: Sequence[str],
    tokenizer,
    prompt_len: int,
    key: jax.Array,
    config,
    spec: EpisodeSpec,
    examples: Optional[Sequence[Any]] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> EpisodeCompletions:
  """`config.num_samples` episodes for each prompt (B * G rows,
  prompt-major), each of at most `config.max_new_tokens` tokens after the
  prompt, policy and observations together.

  Args:
    graphdef, params, prompts, tokenizer, prompt_len, key, config, mesh: as
      for `ugrad.sampling.sample_prompts`.
    spec: the environment and the episodes' limits.
    examples: the question of each prompt, for `Environment.open` (None:
      each episode opens on None).

  Raises:
    errors.UserError: more than `spec.max_error_rate` of the rows' episodes
      raised.
  """
  stops = stop_ids(spec.environment, tokenizer)
  ids = [tasks_base.encode_prompt(tokenizer, text) for text in prompts]
  p_tokens, p_mask = layout.pack_prompts(ids, prompt_len, tokenizer.pad_id)
  prompt_mask = np.repeat(np.asarray(p_mask, np.int32), config.num_samples, 0)
  if mesh is not None:
    p_tokens, p_mask = distributed.put_global(
        (p_tokens, p_mask), prompts_lib.prompt_sharding(mesh, len(ids))
    )
  p, n, g = prompt_len, config.max_new_tokens, config.num_samples
  n_rows = len(ids) * g
  rows = turns.EpisodeRows(
      spec,
      turns.open_episodes(spec.environment, examples, n_rows, g),
      tokenizer,
      n_rows,
      p,
      p + n,
  )
  state = _prefill_jit(graphdef, params, p_tokens, p_mask, config, stops)
  if rows.failed.any():
    state = {
        **state,
        "done": distributed.put_global(rows.failed, state["done"].sharding),
    }
  phases = layout.kv_phases(p, n, config.kv_block)
  rounds = 0
  for phase, slots in enumerate(phases):
    if phase:
      state = {**state, "cache": _grow_jit(state["cache"], slots)}
    while True:
      state = _decode_jit(
          graphdef, params, state, key, config, stops, slots, False
      )
      if not bool(distributed.host_get(jnp.any(state["stopped"]))):
        break
      state = _answer_stopped(state, rows, p)
      rounds += 1
  if not bool(distributed.host_get(jnp.all(state["done"]))):
    state = _decode_jit(
        graphdef, params, state, key, config, stops, phases[-1], True
    )
  out = _completions(state, rows, tokenizer, prompt_mask, spec)
  out.answer_rounds = rounds
  return out


def _completions(
    state, rows: turns.EpisodeRows, tokenizer, prompt_mask, spec
) -> Any:
  """The host copies, texts and episode records of a finished call."""
  out = distributed.host_get(
      {k: state[k] for k in ("tokens", "logp", "completion", "real", "done")}
  )
  # A row that stopped at the last column wanted an answer it cannot get.
  n_rows = len(rows.failed)
  rows.truncated |= ~np.asarray(out["done"], bool)
  failed = int(rows.failed.sum())
  if failed > spec.max_error_rate * n_rows:
    raise errors.UserError(
        f"the environment failed on {failed} of {n_rows} episodes, more "
        f"than max_error_rate={spec.max_error_rate} (see the logged errors)"
    )
  tokens = np.asarray(out["tokens"], np.int32)
  real = np.asarray(out["real"], np.int32)
  completion = np.asarray(out["completion"], np.int32)
  p = prompt_mask.shape[1]
  texts = [tokenizer.decode(row[p:][m[p:] > 0]) for row, m in zip(tokens, real)]
  # The last turn: policy tokens after the last answered one.
  cols = np.arange(tokens.shape[1])[None, :]
  last_turn = np.any((cols >= rows.turn_start[:, None]) & (completion > 0), 1)
  return EpisodeCompletions(
      tokens=tokens,
      attention_mask=np.pad(prompt_mask, ((0, 0), (0, real.shape[1] - p)))
      + real,
      completion_mask=completion,
      logp=np.asarray(out["logp"], np.float32),
      texts=texts,
      step_rewards=rows.step_rewards,
      step_mask=rows.step_mask,
      turns=rows.turns + (last_turn & (rows.turns < rows.spec.max_turns)),
      calls=rows.calls,
      invalid_calls=rows.invalid,
      truncated=rows.truncated,
      failed=rows.failed,
      prompt_lengths=prompt_mask.sum(1),
  )


class EpisodeSampler:
  """A `Sampler` of episodes: `(params, prompts, key, examples=None) ->
  EpisodeCompletions` with everything else bound (`episodic` tells a data
  source to pass the questions, which the environment opens episodes on)."""

  episodic = True

  def __init__(self, graphdef, tokenizer, prompt_len, config, spec, mesh=None):
    self.graphdef, self.tokenizer, self.prompt_len = (
        graphdef,
        tokenizer,
        (prompt_len),
    )
    self.config, self.spec, self.mesh = config, spec, mesh

  def __call__(self, params, prompts, key, examples=None):
    return sample_episodes(
        self.graphdef,
        params,
        prompts,
        self.tokenizer,
        self.prompt_len,
        key,
        self.config,
        self.spec,
        examples=examples,
        mesh=self.mesh,
    )


def episode_metrics(out: EpisodeCompletions) -> dict:
  """Per-episode means of a call's episodes, for the run's logs."""
  calls = float(out.calls.sum())
  return {
      "episode_turns": float(out.turns.mean()),
      "episode_tool_calls": float(out.calls.mean()),
      "episode_valid_call_frac": (
          1.0 - float(out.invalid_calls.sum()) / calls if calls else 1.0
      ),
      "episode_tokens": float(
          (out.attention_mask.sum(1) - out.prompt_lengths).mean()
      ),
      "episode_truncated_frac": float(out.truncated.mean()),
      "episode_failed_frac": float(out.failed.mean()),
      "episode_answer_rounds": float(out.answer_rounds),
  }
