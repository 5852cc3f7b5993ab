"""Prompt texts in, decoded completions out: the one sampling loop.

`sample_prompts` encodes and packs prompt texts, runs the KV-cache sampler
(`ugrad.sampling.sampler`) on the run's mesh and decodes the completions;
`make_sampler` binds it into the `Sampler` that data sources, evaluation
and reward-model labelling call. Multi-turn episodes have their own loop
(`ugrad.sampling.episodes`) with the same `Completions` out.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

from flax import nnx
import jax
import numpy as np

from ugrad.runtime import distributed
from ugrad.sampling import layout
from ugrad.sampling.sampler import sample
from ugrad.sampling.sampler import SamplingConfig
from ugrad.models import sharding as sharding_lib
from ugrad.tasks import base as tasks_base

# (params, prompt texts, key) -> Completions: a policy's sampler, as data
# sources, evaluation and reward-model labelling call it.
Sampler = Callable[[Any, Sequence[str], jax.Array], "Completions"]


@dataclasses.dataclass
class Completions:
  """Host copies of sampled completions, R = B * G rows, prompt-major.

  Attributes:
    tokens: int32 [R, P + N] (the `Samples` layout).
    attention_mask: int32 [R, P + N].
    completion_mask: int32 [R, P + N].
    logp: float32 [R, P + N], see `Samples.logp`.
    texts: the decoded completion of each row.
  """

  tokens: np.ndarray
  attention_mask: np.ndarray
  completion_mask: np.ndarray
  logp: np.ndarray
  texts: list


def sample_prompts(
    graphdef: nnx.GraphDef,
    params: Any,
    prompts: Sequence[str],
    tokenizer,
    prompt_len: int,
    key: jax.Array,
    config: SamplingConfig,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> Completions:
  """The one sampling loop: prompt texts -> encode -> pack -> sample ->
  decode. Every caller (data sources, evaluation, reward-model labelling,
  iterative RL) samples through it.

  Args:
    graphdef: the policy's graph definition.
    params: its parameters (as trained: sharded or not).
    prompts: B prompt texts (BOS is added when the tokenizer has one).
    tokenizer: encodes prompts and decodes completions.
    prompt_len: P; prompts are left-padded to it (keep it fixed per run so
      the sampler compiles once).
    key: PRNG key; equal keys give equal samples.
    config: see `SamplingConfig`.
    mesh: the run's mesh: prompts are split over its batch axes when their
      number divides, else replicated; parameters stay as they are (no
      gather to one device). None leaves placement to JAX.

  Returns:
    `Completions` of B * G rows.
  """
  ids = [tasks_base.encode_prompt(tokenizer, text) for text in prompts]
  p_tokens, p_mask = layout.pack_prompts(ids, prompt_len, tokenizer.pad_id)
  if mesh is not None:
    p_tokens, p_mask = distributed.put_global(
        (p_tokens, p_mask), prompt_sharding(mesh, len(ids))
    )
  out = distributed.host_get(
      sample(graphdef, params, p_tokens, p_mask, key, config)
  )
  tokens = np.asarray(out.tokens, np.int32)
  completion_mask = np.asarray(out.completion_mask, np.int32)
  texts = [
      tokenizer.decode(row)
      for row in layout.completion_ids(tokens, completion_mask)
  ]
  return Completions(
      tokens,
      np.asarray(out.attention_mask, np.int32),
      completion_mask,
      np.asarray(out.logp, np.float32),
      texts,
  )


def prompt_sharding(
    mesh: jax.sharding.Mesh, rows: int
) -> jax.sharding.NamedSharding:
  """Prompt rows over the mesh's batch axes when they divide, else
  replicated (every device then samples every row)."""
  divides = rows % sharding_lib.batch_shards(mesh.shape) == 0
  spec = jax.P(sharding_lib.BATCH_AXES) if divides else jax.P()
  return jax.sharding.NamedSharding(mesh, spec)


def make_sampler(
    graphdef: nnx.GraphDef,
    tokenizer,
    prompt_len: int,
    config: SamplingConfig,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> Sampler:
  """`sample_prompts` with everything but (params, prompts, key) bound."""

  def sampler(params, prompts: Sequence[str], key: jax.Array) -> Completions:
    return sample_prompts(
        graphdef, params, prompts, tokenizer, prompt_len, key, config, mesh
    )

  return sampler
