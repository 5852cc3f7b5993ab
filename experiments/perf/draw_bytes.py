r"""HBM bytes of the sampler's per-step draw over the vocabulary, on a TPU.

  python -m experiments.perf.draw_bytes [--topology=v5e-8] [--rows=512] \
      [--vocab=151936]

Compiles, for one chip of the topology (ahead of time, on this host), the
sampler's choice of the next token from [rows, vocab] bfloat16 logits at
temperature 1 (`sampler.choose_tokens`: one compensated reduction,
`sampler.draw`) and the two-pass reference it replaced
(`jax.random.categorical`, then `log_softmax` at the drawn token), and
prints for each XLA's bytes accessed and `experiments/hlo_bytes.py`'s
count of the program's HBM bytes, against the logits' own size.
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from experiments import hlo_bytes
from experiments import plan_compile
from ugrad.sampling import sampler

_TOPOLOGY = flags.DEFINE_string("topology", "v5e-8", "Cloud TPU topology")
_ROWS = flags.DEFINE_integer("rows", 512, "rows decoded per chip")
_VOCAB = flags.DEFINE_integer("vocab", 151936, "vocabulary size")


def two_pass(logits, key):
  """The draw before `sampler.draw`: categorical, then log_softmax."""
  x = logits.astype(jnp.float32)
  token = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
  logp = jax.nn.log_softmax(x, axis=-1)
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def one_pass(logits, key):
  config = sampler.SamplingConfig(max_new_tokens=1, eos_id=0)
  return sampler.choose_tokens(logits, key, config)


def measure(fn, topology: str, rows: int, vocab: int) -> dict:
  """{"xla": bytes accessed, "hbm": HBM bytes} of `fn` compiled for one
  chip of `topology` on [rows, vocab] bfloat16 logits."""
  device = plan_compile.topology_devices(topology)[0]
  where = jax.sharding.SingleDeviceSharding(device)
  logits = jax.ShapeDtypeStruct((rows, vocab), jnp.bfloat16, sharding=where)
  key = jax.ShapeDtypeStruct(
      (), jax.eval_shape(jax.random.key, 0).dtype, sharding=where
  )
  compiled = plan_compile.compile_for_tpu(jax.jit(fn), logits, key)
  return dict(
      xla=plan_compile.compiled_cost(compiled)["bytes_accessed"],
      hbm=hlo_bytes.hbm_bytes(compiled.as_text()),
  )


def main(argv):
  del argv
  rows, vocab = _ROWS.value, _VOCAB.value
  size = rows * vocab * 2
  print(
      f"{_TOPOLOGY.value}, [{rows}, {vocab}] bfloat16 logits: {size/1e6:.1f} MB"
  )
  for name, fn in (("two-pass", two_pass), ("one-pass", one_pass)):
    got = measure(fn, _TOPOLOGY.value, rows, vocab)
    print(
        f"  {name}: XLA bytes accessed {got['xla']/1e6:.1f} MB, HBM bytes "
        f"{got['hbm']/1e6:.1f} MB = {got['hbm']/size:.2f}x the logits"
    )


if __name__ == "__main__":
  app.run(main)
