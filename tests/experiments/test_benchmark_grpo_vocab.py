"""experiments/perf/benchmark_grpo_vocab.py: its FLOP count by hand, its
refusals, and the command on a CPU at a tiny shape with the whole Qwen2.5
vocabulary (the figures themselves need a device)."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import grpo as grpo_config
from experiments.perf import benchmark_grpo_vocab as vocab_bench
from ugrad import errors
from ugrad.models import model_config

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def test_sample_flops_step_by_step():
  cfg = model_config.preset("qwen2.5-0.5b", 32)
  n, b, g, p, new = 494_032_768, 3, 2, 5, 7
  head = 151936 * 896
  attention = 4 * 24 * 14 * 64
  # The prefill: every prompt token through the layers, the head once, and
  # attention's P x P scores; then each decode step: every row's token
  # through the whole model, attending to the keys written so far.
  total = b * (2 * (n - head) * p + 2 * head + attention * p * p)
  for i in range(new - 1):
    total += b * g * (2 * n + attention * (p + i + 1))
  assert vocab_bench.sample_flops(cfg, n, b, g, p, new) == pytest.approx(total)
  flops = vocab_bench.step_flops(cfg, n, b, g, p, new, width=12)
  assert flops["reference"] == model_config.forward_flops(cfg, n, b * g, 12)
  assert flops["update"] == 3 * flops["reference"]


@pytest.mark.parametrize(
    "eos, pad, micro, match",
    [
        (1000, 0, 1, "--vocab_eos=1000 is not an id of the 1000-id"),
        (1, -1, 1, "--vocab_pad=-1 is not an id"),
        (1, 0, 3, "--vocab_micro_batches=3 does not divide the step's 8"),
    ],
)
def test_bad_ids_and_micro_batches_are_refused(eos, pad, micro, match):
  config = grpo_config.get_config()
  config.reward = "rule"
  config.sampling.questions, config.sampling.group_size = 4, 2
  config.micro_batches = micro
  with pytest.raises(errors.UserError, match=match):
    vocab_bench.Step(config, 1000, eos, pad)


# About 25 s on 2 loaded cores: the sampler, the reference pass and the
# update compiled for a one-layer model with 151,936 vocabulary rows.
@pytest.mark.slow
def test_command_prints_the_step_on_a_cpu():
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.perf.benchmark",
          "--grpo_vocab",
          "--vocab_model=tiny",
          "--vocab_prompts=2",
          "--vocab_group=2",
          "--vocab_prompt_len=4",
          "--vocab_new_tokens=4",
          "--vocab_micro_batches=2",
          "--repeats=2",
          "--peak_tflops=1",
      ],
      cwd=_REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=600,
      check=True,
  ).stdout
  figures = {f["figure"]: f for f in map(json.loads, out.splitlines())}
  step = figures["grpo_vocab_step"]
  assert step["vocab"] == 151936 and step["rows"] == 4
  assert len(step["s_per_step_all"]) == 2
  # Random weights over 151,936 ids: no row stops early.
  assert step["completion_tokens"] == 2 * 2 * 4
  assert step["completion_tokens_per_s"] == pytest.approx(
      16 / step["s_per_step"], rel=0.3
  )
  phases = step["phases_s"]
  assert set(phases) == {"sample", "reward", "reference", "update"}
  assert sum(phases.values()) == pytest.approx(step["s_per_step"], rel=0.3)
  assert 0 < step["reward_mean"] < 1
  assert step["update_width"] == 8  # P + N, under one trim bucket.
  total = sum(step["step_flops"].values())
  assert step["mfu"] == pytest.approx(
      total / step["s_per_step"] / 1e12, rel=1e-2, abs=1e-4
  )
