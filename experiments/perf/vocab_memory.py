"""Temp memory of the compiled GRPO update as the batch grows.

  python -m experiments.perf.vocab_memory [--batches=8,32] [--layers=2] \
      [--dtype=float32] [--chunk_tokens=2048]

Compiles (never runs) the jitted GRPO update of `ugrad.training.update` on
the CPU for qwen2.5-0.5b's shape cut to a few layers (its 151,936-token
vocabulary kept), at a P + N = 128 + 384 layout and each batch size, and
prints XLA's `temp_size_in_bytes` per batch size as one JSON line each. With
the vocabulary head chunked by flattened tokens, the logits' share of it
stays flat as the batch grows; the rest grows with the activations.
"""

import functools
import json

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from ugrad import coefficients
from ugrad import models
from ugrad.models import logprobs
from ugrad.rollout import Rollout
from ugrad.training import update as update_lib

_BATCHES = flags.DEFINE_list("batches", ["8", "32"], "Batch sizes (rows).")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers kept.")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "P.")
_NEW = flags.DEFINE_integer("new_tokens", 384, "N.")
_REMAT = flags.DEFINE_string(
    "remat", "full", "ModelConfig.remat: what the decoder layers keep."
)
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype.")
_CHUNK = flags.DEFINE_integer(
    "chunk_tokens", logprobs.CHUNK_TOKENS, "token_logprobs(chunk_tokens=)."
)


def temp_bytes(rows: int) -> int:
  """temp_size_in_bytes of the compiled update for `rows` rows."""
  # The update calls `models.token_logprobs` with its default chunk.
  models.token_logprobs = functools.partial(
      logprobs.token_logprobs, chunk_tokens=_CHUNK.value
  )
  cfg = models.preset(
      "qwen2.5-0.5b",
      151936,
      num_layers=_LAYERS.value,
      remat=_REMAT.value,
      dtype=_DTYPE.value,
  )
  graphdef, params = nnx.split(
      nnx.eval_shape(lambda: models.Transformer(cfg, rngs=nnx.Rngs(0))),
      nnx.Param,
  )
  optimizer = optax.adamw(1e-6)
  opt_state = jax.eval_shape(optimizer.init, params)
  t = _PROMPT.value + _NEW.value
  spec = lambda *s, d=jnp.float32: jax.ShapeDtypeStruct(s, d)
  batch = Rollout(
      tokens=spec(rows, t, d=jnp.int32),
      completion_mask=spec(rows, t, d=jnp.int32),
      attention_mask=spec(rows, t, d=jnp.int32),
      logp_old=spec(rows, t),
      logp_ref=spec(rows, t),
      rewards=spec(rows),
      group_ids=spec(rows, d=jnp.int32),
  )
  loss = update_lib.policy_loss(
      graphdef, coefficients.make_coefficient("grpo"), "sequence", _NEW.value
  )
  update = update_lib.make_update(loss, optimizer, 1, (None, None, None))
  compiled = update.lower(params, opt_state, batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main(argv):
  del argv
  for rows in map(int, _BATCHES.value):
    print(json.dumps({"rows": rows, "temp_bytes": temp_bytes(rows)}))


if __name__ == "__main__":
  app.run(main)
