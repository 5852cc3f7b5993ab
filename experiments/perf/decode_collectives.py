r"""Whether decoding is collective-bound on a training mesh, on a TPU.

  python -m experiments.perf.decode_collectives --model=qwen2.5-7b \
      --topology=v5p-8 --mesh=data=1,fsdp=4 [--questions=8 --group=16 \
      --prompt_len=512 --new_tokens=1024]

Compiles (ahead of time, on this host) the plan's decode step alone
(`experiments.plan_roofline.decode_case`: the sampler's loop body at slot
P + N / 2, its cache the default `kv_block`'s phase) for the model on the
topology's mesh, and prints one JSON line: its collectives (ops and
bytes each chip receives), their time over ICI at half the chip's
bidirectional bandwidth, and the time of the step's HBM bytes. A step
whose ICI time is the larger is collective-bound: there a sampling mesh
of its own would pay. Seconds, not minutes: no sampler, update or
log-prob pass is compiled.
"""

import functools
import json
import types

from absl import app
from absl import flags
import jax

from experiments import plan_compile
from experiments import plan_roofline
from experiments.configs import grpo
from ugrad.sampling import sampler
from ugrad.training import build


def measure(model, topology, mesh, questions, group, prompt_len, new_tokens):
  """The decode step's facts (`plan_roofline.decode_case` and
  `collective_facts`) for `model` on `topology` with `mesh` sizes."""
  config = grpo.get_config()
  config.model = model
  config.mesh.update(mesh)
  # The task's vocabulary, as the plan's: a published preset keeps its own.
  vocab = build.make_task(config).tokenizer.vocab_size
  m = plan_compile.model_on_mesh(config, topology, vocab)
  kv_block = sampler.SamplingConfig(max_new_tokens=1, eos_id=0).kv_block
  args, facts = plan_roofline.decode_case(
      m, questions, group, prompt_len, new_tokens, kv_block
  )
  with jax.set_mesh(m.mesh.mesh):
    compiled = plan_compile.compile_for_tpu(plan_roofline.decode_step, *args)
  facts.update(plan_roofline.collective_facts(compiled.as_text(), m.chip))
  return dict(model=model, topology=topology, mesh=m.shape, **facts)


def _define_flags() -> types.SimpleNamespace:
  """The command line's flags, defined only when this module is the
  program: tests import it beside modules with flags of the same names."""
  return types.SimpleNamespace(
      model=flags.DEFINE_string("model", "qwen2.5-7b", "model preset"),
      topology=flags.DEFINE_string("topology", "v5p-8", "Cloud TPU topology"),
      mesh=flags.DEFINE_string("mesh", "data=1,fsdp=4", "axis=size,..."),
      questions=flags.DEFINE_integer("questions", 8, "prompts per step"),
      group=flags.DEFINE_integer("group", 16, "samples per prompt"),
      prompt_len=flags.DEFINE_integer("prompt_len", 512, "P"),
      new_tokens=flags.DEFINE_integer("new_tokens", 1024, "N"),
  )


def main(argv, options: types.SimpleNamespace):
  del argv
  mesh = {
      k: int(v)
      for k, v in (kv.split("=") for kv in options.mesh.value.split(","))
  }
  facts = measure(
      options.model.value,
      options.topology.value,
      mesh,
      options.questions.value,
      options.group.value,
      options.prompt_len.value,
      options.new_tokens.value,
  )
  print(json.dumps(facts))


if __name__ == "__main__":
  app.run(functools.partial(main, options=_define_flags()))
