"""One train step on a mesh, saved for comparison with one device (a test
helper for tests/training/test_mesh.py).

Usage: python -m tests.helpers.sharded_step SFT_DIR WORKDIR OUT_PREFIX CASE...
where CASE is METHOD:DATA,FSDP,TENSOR (e.g. grpo:2,2,2; METHOD_lora, e.g.
grpo_lora, trains rank-4 adapters with a KL term); each case writes
OUT_PREFIX-METHOD-D-F-T.npz. Run with
XLA_FLAGS=--xla_force_host_platform_device_count=8 for 8 devices.
"""

import os
import sys

from flax import nnx
import jax
import numpy as np

from tests.helpers import train_util
import ugrad
from ugrad import sampling
from ugrad.training import trainer as trainer_lib

MESH_PRESET = "mesh_test"
LENGTH_REWARD = "length_test"


def _length(ctx, batch) -> dict:
  """A dense reward (a barely trained policy gets no rule reward, so its
  advantages, and gradients, would be zero)."""
  del ctx
  return {"rewards": np.asarray([len(t) / 32 for t in batch.texts], np.float32)}


ugrad.register_reward(LENGTH_REWARD, _length, replace=True)


def config_for(method: str, sft_dir: str, mesh: tuple):
  lora = method.endswith("_lora")
  config = train_util.tiny(
      method.removesuffix("_lora"), steps=1, init_from=sft_dir
  )
  if lora:  # The reference (the base, adapters off) enters the loss.
    config.lora.rank, config.coef.beta = 4, 0.04
  if config.reward == "rule":
    config.reward = LENGTH_REWARD
  config.sampling.questions = 16
  # Micro-batches accumulate on the mesh too; each holds 8k rows.
  config.minibatches, config.micro_batches = 1, 2
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
  return config


def greedy_tokens(trainer) -> np.ndarray:
  """Greedy completions of 8 test prompts, sampled on the run's mesh."""
  task = trainer.task
  prompts = [task.prompt(ex) for ex in task.examples("test")[:8]]
  out = sampling.sample_prompts(
      trainer.policy.graphdef,
      trainer.learner.full(trainer.state["params"]),
      prompts,
      trainer.policy.tokenizer,
      trainer.prompt_len,
      jax.random.key(0),
      sampling.SamplingConfig(
          max_new_tokens=16,
          eos_id=trainer.policy.tokenizer.eos_id,
          temperature=0.0,
      ),
      trainer.mesh.mesh,
  )
  return out.tokens


def first_gradient(trainer) -> list:
  """The gradient of the step-1 loss numerator (the trained parameters:
  the policy's, or its adapters), on the run's mesh."""
  _, rollout = trainer.rollout(0)
  loss_fn = trainer.learner.loss_fn()
  full = trainer.learner.full
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(full(p), b)[0]))
  return jax.tree.leaves(
      jax.device_get(
          grad(trainer.state["params"], trainer.device_batch(rollout))
      )
  )


def _spec(array) -> str:
  """An array's partition spec as the repr of a tuple of its 2 dims."""
  spec = tuple(array.sharding.spec)
  return repr(spec + (None,) * (array.ndim - len(spec)))


def adapter_specs(trainer) -> dict:
  """{"lora_specs": "path adapter-spec kernel-spec" per adapter} of a LoRA
  run; {} otherwise."""
  if trainer.learner.frozen is None:
    return {}
  kernels = dict(nnx.to_flat_state(trainer.learner.frozen))
  rows = []
  for path, variable in nnx.to_flat_state(trainer.state["params"]):
    kernel = kernels[path[:-2] + ("kernel",)]
    rows.append(
        "|".join(
            (
                "/".join(map(str, path)),
                _spec(variable.get_value()),
                _spec(kernel.get_value()),
            )
        )
    )
  return {"lora_specs": np.asarray(rows)}


def run(sft_dir: str, workdir: str, out: str, method: str, mesh: tuple) -> None:
  trainer = trainer_lib.Trainer(config_for(method, sft_dir, mesh), workdir)
  greedy = greedy_tokens(trainer)
  grads = first_gradient(trainer)
  metrics = trainer.train()
  leaves = jax.tree.leaves(jax.device_get(trainer.state))
  np.savez(
      out,
      loss=metrics["loss"],
      grad_norm=metrics["grad_norm"],
      devices=jax.device_count(),
      greedy=greedy,
      **adapter_specs(trainer),
      **{f"g{i}": np.asarray(g) for i, g in enumerate(grads)},
      **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)},
  )


def case_file(prefix: str, method: str, mesh: tuple) -> str:
  return f"{prefix}-{method}-{'-'.join(map(str, mesh))}.npz"


if __name__ == "__main__":
  sft, work, prefix = sys.argv[1:4]
  for case in sys.argv[4:]:
    name, sizes = case.split(":")
    shape = tuple(int(s) for s in sizes.split(","))
    run(
        sft,
        os.path.join(work, case.replace(":", "-").replace(",", "-")),
        case_file(prefix, name, shape),
        name,
        shape,
    )
