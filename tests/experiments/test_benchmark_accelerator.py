"""experiments/perf/benchmark_accelerator.py: its figures' arithmetic, and the
command on a CPU at a tiny size (the figures themselves need a device)."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from experiments.perf import benchmark_accelerator as accel
from ugrad.models import model_config

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def test_decode_bound_by_hand():
  d, f, layers, kv, dh = 896, 4864, 24, 2, 64
  per_layer = (
      d * d
      + d
      + 2 * (d * kv * dh + kv * dh)
      + d * d  # q, k, v, o
      + 3 * d * f
      + 2 * d
  )  # MLP, two norms
  params = {
      "layers": [jnp.zeros((per_layer,))] * layers,
      "embed": jnp.zeros((151936 * d + d,)),
  }  # tied; final norm
  # Decoding 512 tokens at batch 64 after 128-token prompts in bfloat16 at
  # 4.8 TB/s: every parameter and the mean KV cache read per step.
  bf16 = model_config.preset("qwen2.5-0.5b", 32, dtype="bfloat16")
  kv_bytes = 64 * (128 + 256) * 2 * layers * kv * dh * 2
  assert accel.decode_bound_s(bf16, params, 64, 128, 512, 4.8e12) == (
      pytest.approx(
          512 * (2 * (layers * per_layer + 151936 * d + d) + kv_bytes) / 4.8e12
      )
  )


# About 10 s: two compilations of a small model.
@pytest.mark.slow
def test_command_prints_each_figure_on_a_cpu():
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.perf.benchmark",
          "--accelerator",
          "--accel_model=tiny",
          "--accel_dtype=float32",
          "--accel_train_batch=2",
          "--accel_train_length=16",
          "--accel_decode_batch=2",
          "--accel_prompt=4",
          "--accel_new_tokens=4",
          "--repeats=1",
          "--peak_tflops=1",
          "--hbm_gbps=10",
      ],
      cwd=_REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=600,
      check=True,
  ).stdout
  figures = {f["figure"]: f for f in map(json.loads, out.splitlines())}
  assert figures["accelerator"]["peak_tflops"] == 1
  train = figures["train_mfu"]
  assert train["mfu"] == pytest.approx(train["tflops_per_s"], abs=2e-3)
  assert train["tokens_per_s"] == pytest.approx(32 / train["step_s"], rel=1e-2)
  decode = figures["decode"]
  assert decode["tokens_per_s"] == pytest.approx(
      8 / decode["seconds"], rel=1e-2
  )
  assert decode["fraction_of_bound"] == pytest.approx(
      decode["tokens_per_s"] / decode["bound_tokens_per_s"], rel=1e-2, abs=1e-3
  )  # Printed to 3 decimals.
