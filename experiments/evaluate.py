r"""Sampled evaluation of a finished run: pass@k and maj@k with intervals.

  python -m experiments.evaluate --checkpoint=runs/grpo --k=1,4,16,64

Reads the run's task from CHECKPOINT/run_config.json, loads its final policy
from CHECKPOINT/policy, draws --samples completions (default the largest k)
for each of the first --questions held-out questions, prints pass@k and maj@k
for every k and the greedy accuracy, each with a 95% bootstrap interval over
questions, and writes them as JSON (default CHECKPOINT/eval_k.json).

Computed results are never lost: when that file cannot be written (a
read-only workdir, a full disk), they go to eval_k.RUN.json in the current
directory or else in the temporary directory ($TMPDIR), and one line says
where; the exit status is 0. Only when no file can be written are they
printed as JSON, with one line naming each place tried, and the exit
status is 1.
"""

import json
import os
import sys
import tempfile
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from flax import nnx

from ugrad import errors
from ugrad.training import build
from ugrad.runtime import compile_cache
from ugrad.sampling import evaluation as eval_lib
from ugrad.runtime import host_memory
from ugrad.runtime import paths
from ugrad.training import runs
from ugrad.sampling import stats

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Workdir of a finished ugrad run."
)
_K = flags.DEFINE_list(
    "k", ["1", "4", "16", "64"], "Comma-separated k of pass@k and maj@k."
)
_QUESTIONS = flags.DEFINE_integer(
    "questions", 512, "Held-out questions (the first ones of the test split)."
)
_SAMPLES = flags.DEFINE_integer(
    "samples", None, "Samples per question (default: the largest k)."
)
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the samples and the bootstrap.")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens",
    None,
    "Completion budget (default: the run's sampling.max_new_tokens).",
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON file to write (default: CHECKPOINT/eval_k.json)."
)
flags.mark_flag_as_required("checkpoint")

OUTPUT_FILE = "eval_k.json"


def load_run(run_dir: str):
  """(config, task, graphdef, params) of the finished run in `run_dir`."""
  config = runs.finished_config(run_dir)
  task = build.make_task(config)
  graphdef, params, own = runs.load_policy(run_dir)
  tokenizer = runs.policy_tokenizer(
      run_dir,
      own or runs.run_tokenizer(config),  # A run saved before runs stored it.
      task.tokenizer,
      nnx.merge(graphdef, params).config.vocab_size,
  )
  return config, build.with_tokenizer(task, tokenizer), graphdef, params


def parse_ks(values: Sequence[str]) -> list[int]:
  """Sorted distinct positive ints from the --k list.

  Raises:
    errors.UserError: for an empty list or an entry that is not a positive
      integer.
  """
  ks = stats.parse_ks(values, "--k")
  if not ks:
    raise errors.UserError("--k is empty; give e.g. --k=1,4,16,64")
  return ks


def check_samples(ks: Sequence[int], samples: Optional[int]) -> int:
  """The samples per question: `samples`, or the largest k when None.

  Raises:
    errors.UserError: when samples is below the largest k.
  """
  if samples is None:
    return max(ks)
  if samples < max(ks):
    raise errors.UserError(
        f"--samples={samples} is fewer than the largest k "
        f"({max(ks)}); pass@k and maj@k need k <= samples"
    )
  return samples


def evaluate(
    run_dir: str,
    ks: Sequence[int],
    questions: int = 512,
    samples: Optional[int] = None,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: Optional[int] = None,
) -> dict:
  """Sampled evaluation of the finished run in `run_dir`.

  Returns:
    `eval_lib.sample_eval`'s dict plus what produced it: checkpoint, task,
    temperature, seed, ks, max_new_tokens.
  """
  samples = check_samples(ks, samples)
  config, task, graphdef, params = load_run(run_dir)
  max_new = (
      config.sampling.max_new_tokens
      if max_new_tokens is None
      else max_new_tokens
  )
  result = eval_lib.sample_eval(
      task,
      graphdef,
      params,
      questions,
      samples,
      ks,
      build.prompt_length(task, config.data.get("max_prompt_tokens", 0)),
      max_new,
      temperature=temperature,
      seed=seed,
  )
  return dict(
      result,
      checkpoint=os.path.abspath(run_dir),
      task=config.task,
      ks=list(ks),
      temperature=temperature,
      seed=seed,
      max_new_tokens=max_new,
  )


def _cell(result: dict, name: str) -> str:
  lo, hi = result[name + "_ci"]
  return f"{100 * result[name]:5.1f}% " f"[{100 * lo:5.1f}, {100 * hi:5.1f}]"


def format_table(result: dict) -> str:
  """The result as a table of pass@k and maj@k per k, greedy below."""
  lines = [
      f"{result['checkpoint']}: {result['num_questions']} held-out "
      f"{result['task']} questions, {result['samples_per_question'][0]} "
      f"samples each at temperature {result['temperature']:g}, seed "
      f"{result['seed']} (95% bootstrap intervals)",
      f"{'k':>5}  {'pass@k':<22}  {'maj@k':<22}",
  ]
  for k in result["ks"]:
    lines.append(
        f"{k:>5}  {_cell(result, f'pass@{k}'):<22}  "
        f"{_cell(result, f'maj@{k}'):<22}"
    )
  lines.append(f"greedy accuracy: {_cell(result, 'greedy_acc')}")
  return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
  """Writes `result` to `path` whole or not at all."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  paths.write_atomic(path, json.dumps(result, indent=2))


def fallback_paths(run_dir: str) -> list[str]:
  """Where results go when --output cannot be written: eval_k.RUN.json in
  the current directory, then in the temporary directory; each with a
  number added when it exists already (an earlier fallback's results)."""
  name = os.path.basename(os.path.abspath(run_dir)) or "run"
  stem = f"{os.path.splitext(OUTPUT_FILE)[0]}.{name}"
  found = []
  for directory in (os.getcwd(), tempfile.gettempdir()):
    path, n = os.path.join(directory, f"{stem}.json"), 1
    while os.path.exists(path):
      n += 1
      path = os.path.join(directory, f"{stem}.{n}.json")
    found.append(path)
  return found


def save(result: dict, output: str, run_dir: str) -> tuple[Optional[str], str]:
  """Writes `result` to `output`, or else to the first of
  `fallback_paths(run_dir)` that takes it.

  Returns:
    (the file written or None, the places that failed and why, as text).
  """
  failed = []
  for path in [output] + fallback_paths(run_dir):
    try:
      write_json(result, path)
      return path, "; ".join(failed)
    except OSError as e:
      failed.append(f"{path} ({e.strerror or e})")
  return None, "; ".join(failed)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  host_memory.keep_freed_memory()
  compile_cache.enable()
  run_dir = _CHECKPOINT.value
  try:  # Bad flags and a missing or unfinished run: a message, no trace.
    ks = parse_ks(_K.value)
    samples = check_samples(ks, _SAMPLES.value)
    runs.finished_config(run_dir)
  except errors.UserError as e:  # errors.MissingInput included.
    raise app.UsageError(str(e)) from e
  result = evaluate(
      run_dir,
      ks,
      _QUESTIONS.value,
      samples,
      _TEMPERATURE.value,
      _SEED.value,
      _MAX_NEW.value,
  )
  output = _OUTPUT.value or os.path.join(run_dir, OUTPUT_FILE)
  print(format_table(result), flush=True)
  written, failed = save(result, output, run_dir)
  if written is None:
    print(json.dumps(result, indent=2), flush=True)
    print(
        f"error: could not write the results to {failed}; they are printed "
        "above as JSON",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(1)
  if failed:
    print(f"could not write {failed}; wrote {written} instead", flush=True)
  else:
    print(f"wrote {output}", flush=True)


if __name__ == "__main__":
  app.run(main)
