"""Greedy answers of a finished arithmetic run, classified by how they fail.

  python experiments/results/hard_task/answer_kinds.py RUN_DIR [QUESTIONS]

Samples the run's policy greedily on the first QUESTIONS (1,024) test
questions and counts: correct; wrong with "#### n" equal to the last
written step's result; wrong with n a proper prefix of that result (the
answer line cut short by an early EOS); no answer; other. The GRPO-PS
breakdown section of README.md quotes it.
"""

import collections
import re
import sys

import jax

from experiments import evaluate
from ugrad import sampling
from ugrad.tasks import arithmetic
from ugrad.training import build

_RESULT_RE = re.compile(r"=\s*(-?\d+)\s*$", re.M)


def kind(task, example, text: str) -> str:
  """How one completion fares (see the module docstring)."""
  if task.reward(example, text):
    return "correct"
  results = _RESULT_RE.findall(text.split("####")[0])
  got = arithmetic.final_answer(text)
  last = results[-1] if results else None
  if got is None:
    return "no answer"
  if last is not None and str(got) == last:
    return "wrong, answer = last step"
  if last is not None and last.startswith(str(got)):
    return "wrong, answer = last step cut short"
  return "wrong, other"


def main(run: str, n: int = 1024):
  config, task, graphdef, params = evaluate.load_run(run)
  tok = task.tokenizer
  examples = [task.examples("test")[i] for i in range(n)]
  sampling_config = sampling.SamplingConfig(
      max_new_tokens=config.sampling.max_new_tokens,
      eos_id=tok.eos_id,
      pad_id=tok.pad_id,
      temperature=0.0,
  )
  counts = collections.Counter()
  for start in range(0, n, 256):
    chunk = examples[start : start + 256]
    out = sampling.sample_prompts(
        graphdef,
        params,
        [task.prompt(e) for e in chunk],
        tok,
        build.prompt_length(task),
        jax.random.key(0),
        sampling_config,
        None,
    )
    counts.update(kind(task, e, t) for e, t in zip(chunk, out.texts))
  print(run)
  for name, count in sorted(counts.items()):
    print(f"  {name}: {count} ({100 * count / n:.1f}%)")


if __name__ == "__main__":
  main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
