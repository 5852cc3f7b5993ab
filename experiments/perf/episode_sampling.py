"""Times one policy's sampling as single completions and as calculator
episodes (the same prompts, shapes and keys), and scores both.

  python -m experiments.perf.episode_sampling WORKDIR

WORKDIR: a finished run of experiments/configs/grpo_tools.py (its policy
and the hard task's tools variant). Prints the median seconds of 3 calls
after one that compiles, for 32 held-out questions x 8 samples of at most
96 tokens, with accuracy, host answer rounds, calls and tokens per episode.
"""

import statistics
import sys
import time

import jax
import numpy as np

from ugrad import environments
from ugrad import sampling
from ugrad.tasks import ArithmeticTask
from ugrad.training import build
from ugrad.training import runs

QUESTIONS, SAMPLES, TOKENS = 32, 8, 96


def main(workdir: str):
  graphdef, params, _ = runs.load_policy(workdir, None)
  task = ArithmeticTask(
      num_operands=5, operators="+-*", tools=True, n_test=256, seed=0
  )
  tok = task.tokenizer
  examples = [task.examples("test")[i] for i in range(QUESTIONS)]
  prompts = [task.prompt(ex) for ex in examples]
  width = build.prompt_length(task)
  config = sampling.SamplingConfig(
      max_new_tokens=TOKENS,
      eos_id=tok.eos_id,
      pad_id=tok.pad_id,
      num_samples=SAMPLES,
  )
  spec = sampling.EpisodeSpec(environments.make("calculator", task))

  def single(seed):
    return sampling.sample_prompts(
        graphdef, params, prompts, tok, width, jax.random.key(seed), config
    )

  def episodes(seed):
    return sampling.sample_episodes(
        graphdef,
        params,
        prompts,
        tok,
        width,
        jax.random.key(seed),
        config,
        spec,
        examples=examples,
    )

  rows = [ex for ex in examples for _ in range(SAMPLES)]
  for name, fn in (("single", single), ("episodes", episodes)):
    fn(0)
    seconds = []
    for seed in range(1, 4):
      start = time.perf_counter()
      out = fn(seed)
      seconds.append(time.perf_counter() - start)
    acc = np.mean([task.reward(ex, t) for ex, t in zip(rows, out.texts)])
    line = (
        f"{name}: {statistics.median(seconds):.3f} s median of 3 "
        f"({len(rows)} rows), accuracy {acc:.3f}"
    )
    if name == "episodes":
      tokens = (out.attention_mask.sum(1) - out.prompt_lengths).mean()
      line += (
          f", {out.answer_rounds} answer rounds, "
          f"{out.calls.mean():.2f} calls and {tokens:.1f} tokens per episode"
      )
    else:
      line += f", {out.completion_mask.sum(1).mean():.1f} tokens per row"
    print(line)


if __name__ == "__main__":
  main(sys.argv[1])
