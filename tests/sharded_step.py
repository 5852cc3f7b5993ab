"""Runs one GRPO train step and saves its loss and parameters (a test helper).

Usage: python -m tests.sharded_step SFT_DIR WORKDIR OUT.npz FSDP(0/1)
Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 for 8 devices.
"""

import sys

import jax
import numpy as np

from tests import train_util
from ugrad import train


def run(sft_dir: str, workdir: str, out: str, fsdp: bool) -> None:
  config = train_util.tiny("grpo", steps=1, init_from=sft_dir)
  config.fsdp = fsdp
  trainer = train.Trainer(config, workdir)
  metrics = trainer.train()
  leaves = jax.tree.leaves(jax.device_get(trainer.state["params"]))
  np.savez(out, loss=metrics["loss"], devices=jax.device_count(),
           **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)})


if __name__ == "__main__":
  run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1")
