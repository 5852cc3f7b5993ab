"""Every mesh shape trains and samples like one device (8 fake CPU devices),
LoRA too, its adapters sharded like the kernels they adapt."""

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import sharded_step
from tests.helpers import train_util
from ugrad import models
from ugrad import registry
from ugrad.training import trainer as trainer_lib

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]
# SFT: a dataset batch. PPO (with a dense length reward, see sharded_step):
# sampling on the mesh, advantages from its critic, which trains on the mesh
# too.
METHODS = ["sft", "ppo"]
# LoRA GRPO (rank 4, a KL term to the base): data; all three; fsdp x tensor.
LORA = "grpo_lora"
LORA_MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]
_CASES = [(m, mesh) for m in METHODS for mesh in MESHES] + [
    (LORA, mesh) for mesh in LORA_MESHES
]


def _mesh_preset(vocab_size: int) -> models.ModelConfig:
  """Small, with heads, kv heads and MLP width divisible by tensor=4 and a
  width divisible by fsdp=8."""
  return models.ModelConfig(
      vocab_size=vocab_size,
      hidden_size=32,
      num_layers=1,
      num_heads=4,
      num_kv_heads=4,
      mlp_size=64,
  )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(one-device results, 8-device results) by (method, mesh)."""
  registry.register(
      models.PRESETS,
      "model preset",
      sharded_step.MESH_PRESET,
      _mesh_preset,
      replace=True,
  )
  root = tmp_path_factory.mktemp("mesh")
  sft = str(root / "sft")
  config = train_util.tiny("sft")
  config.model = sharded_step.MESH_PRESET
  trainer_lib.Trainer(config, sft).train()
  prefix = str(root / "out")
  one = {}
  for method in METHODS + [LORA]:
    path = sharded_step.case_file(prefix + "-one", method, (1, 1, 1))
    sharded_step.run(sft, str(root / f"one-{method}"), path, method, (1, 1, 1))
    one[method] = np.load(path)
  cases = [f"{m}:{','.join(map(str, mesh))}" for m, mesh in _CASES]
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=8",
  )
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "tests.helpers.sharded_step",
          sft,
          str(root / "eight"),
          prefix,
          *cases,
      ],
      env=env,
      cwd=_REPO,
      capture_output=True,
      text=True,
      timeout=1200,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  eight = {
      case: np.load(sharded_step.case_file(prefix, *case)) for case in _CASES
  }
  return one, eight


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mesh", MESHES, ids=lambda m: "x".join(map(str, m)))
def test_mesh_matches_one_device(runs, method, mesh):
  one, eight = runs
  _assert_same_step(one[method], eight[(method, mesh)], method, mesh)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mesh", LORA_MESHES, ids=lambda m: "x".join(map(str, m))
)
def test_lora_on_a_mesh_matches_one_device(runs, mesh):
  one, eight = runs
  a, b = one[LORA], eight[(LORA, mesh)]
  _assert_same_step(a, b, LORA, mesh)
  # The trained state is the adapters (A and B of q, k, v, o, gate, up,
  # down), each sharded like its kernel: A [in, r] on the kernel's input
  # axis, B [r, out] on its output axis.
  rows = [row.split("|") for row in b["lora_specs"]]
  assert len(rows) == 14 and len(a["lora_specs"]) == 14
  used = set()
  for path, adapter, kernel in rows:
    adapter, kernel = ast.literal_eval(adapter), ast.literal_eval(kernel)
    want = (kernel[0], None) if path.endswith("/a") else (None, kernel[1])
    assert adapter == want, path
    used.update(adapter)
  assert {"fsdp", "tensor"} <= used, used


def _assert_same_step(a, b, method, mesh):
  """One step of `method` on one device (`a`) and on `mesh` (`b`) agree."""
  assert int(a["devices"]) == 1 and int(b["devices"]) == 8
  np.testing.assert_array_equal(a["greedy"], b["greedy"])
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      a["grad_norm"], b["grad_norm"], rtol=1e-4, atol=1e-7
  )
  grads = [key for key in a.files if key.startswith("g") and key[1:].isdigit()]
  assert grads
  scale = max(np.abs(a[key]).max() for key in grads)
  for key in grads:
    np.testing.assert_allclose(
        a[key], b[key], rtol=1e-4, atol=1e-5 * scale, err_msg=key
    )
  # After the step's Adam updates, a sanity bound only: Adam moves each
  # parameter by up to about lr per update whatever the gradient's size, so
  # reduction-order noise in near-zero gradients can move a parameter of
  # one run by up to 2 lr per update against the other (PPO: two updates,
  # and its critic).
  config = sharded_step.config_for(method, "", mesh)
  atol = 2 * config.optim.lr * config.ppo_epochs * config.minibatches
  for key in a.files:
    if key.startswith("p"):
      np.testing.assert_allclose(
          a[key], b[key], rtol=1e-4, atol=atol, err_msg=key
      )
