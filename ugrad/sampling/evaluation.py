"""Evaluation by sampling: greedy accuracy, pass@k and maj@k of a policy.

`greedy_accuracy` and `sample_eval` run a policy on a task's held-out
questions, read each completion's final answer and score it; the statistics
(pass@k, maj@k, bootstrap intervals) are `ugrad.sampling.stats` and
`ugrad.sampling.voting`.
"""

import functools
import operator
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from ugrad import errors
from ugrad import sampling
from ugrad.sampling import episodes as episodes_lib
from ugrad.sampling import stats
from ugrad.sampling import voting
from ugrad.tasks import arithmetic
from ugrad.tasks import jsonl
from ugrad.tasks import math_answers


def sample_texts(
    task, graphdef, params, examples, prompt_len, key, config, mesh, episodes
) -> list:
  """The completion texts of `examples`' prompts: single-turn, or with
  `episodes` (an `EpisodeSpec`) whole episodes, observations included."""
  prompts = [task.prompt(ex) for ex in examples]
  if episodes is None:
    out = sampling.sample_prompts(
        graphdef, params, prompts, task.tokenizer, prompt_len, key, config, mesh
    )
  else:
    out = episodes_lib.sample_episodes(
        graphdef,
        params,
        prompts,
        task.tokenizer,
        prompt_len,
        key,
        config,
        episodes,
        examples=examples,
        mesh=mesh,
    )
  return out.texts


def greedy_accuracy(
    task,
    graphdef,
    params,
    num_questions: int,
    prompt_len: int,
    max_new_tokens: int,
    batch_size: int = 256,
    split: str = "test",
    mesh=None,
    episodes=None,
) -> dict:
  """Greedy accuracy of a policy on the first questions of `split`.

  Every batch has the same shape (the last one is padded with repeats that
  are not scored), so the sampler compiles once.

  Args:
    task: a `ugrad.tasks.Task`.
    graphdef: the policy's graph definition.
    params: its parameters.
    num_questions: how many questions (at most the split's size).
    prompt_len: the fixed prompt length P.
    max_new_tokens: the completion budget.
    batch_size: questions per sampler call.
    split: "test" (held out) or "train".
    mesh: the run's device mesh, where the sampler's prompts go (None:
      JAX's default placement).
    episodes: an `EpisodeSpec`: each question is a multi-turn episode with
      its environment (None: one completion).

  Returns:
    {"greedy_acc": mean, "greedy_acc_ci": [low, high], "eval_questions": n}.
  """
  examples = task.examples(split)
  n = min(num_questions, len(examples))
  tok = task.tokenizer
  config = sampling.SamplingConfig(
      max_new_tokens=max_new_tokens,
      eos_id=tok.eos_id,
      pad_id=tok.pad_id,
      temperature=0.0,
  )
  batch_size = min(batch_size, n)
  correct = []
  for start in range(0, n, batch_size):
    chunk = [examples[i] for i in range(start, min(start + batch_size, n))]
    padded = chunk + chunk[:1] * (batch_size - len(chunk))
    texts = sample_texts(
        task,
        graphdef,
        params,
        padded,
        prompt_len,
        jax.random.key(0),
        config,
        mesh,
        episodes,
    )
    for ex, text in zip(chunk, texts):
      correct.append(task.reward(ex, text))
  mean, low, high = stats.bootstrap_ci(np.asarray(correct, np.float64))
  return {"greedy_acc": mean, "greedy_acc_ci": [low, high], "eval_questions": n}


# ---------------------------------------------------------------------------
# Sampled evaluation: n samples per held-out question -> pass@k and maj@k.
# ---------------------------------------------------------------------------

# Sampler rows per call when `batch_questions` is not given.
_SAMPLE_ROWS = 512
AnswerFn = Callable[[str], voting.Answer]


def _nonempty(read: Callable[[str], Optional[str]]) -> AnswerFn:
  """`read`, with blank answers counted as unparsable (None)."""

  def answer(text: str) -> Optional[str]:
    got = read(text)
    return got.strip() if got is not None and got.strip() else None

  return answer


def _math_equivalence(boxed: bool) -> voting.Equivalence:
  """math-verify equality, memoised: votes compare the same pairs often."""

  @functools.lru_cache(maxsize=1 << 16)
  def same(a: str, b: str) -> bool:
    return a == b or math_answers.answers_match(a, b, boxed)

  return same


def answer_functions(task) -> tuple[AnswerFn, voting.Equivalence]:
  """How to read and compare the final answers of a task's completions.

  The embedded task's answer is the integer after "####" (compared with ==);
  a JSONL task's is the text after "####" (GSM8K) or in the last \\boxed{}
  (MATH), compared with math-verify as the task's reward compares it (and
  equal when the strings are equal, even where math-verify cannot parse).

  Args:
    task: a `ugrad.tasks.ArithmeticTask` or `ugrad.tasks.JsonlTask`.

  Returns:
    (answer_fn, equivalent): completion text -> answer (None when it does
    not parse), and (a, b) -> bool.

  Raises:
    ValueError: for any other kind of task.
  """
  if isinstance(task, arithmetic.ArithmeticTask):
    return arithmetic.final_answer, operator.eq
  if isinstance(task, jsonl.JsonlTask):
    return (_nonempty(task.fmt.final_answer), _math_equivalence(task.fmt.boxed))
  raise errors.UserError(
      f"no final-answer reader for a {type(task).__name__}; known tasks: "
      "ArithmeticTask, JsonlTask (or pass answer_fn and equivalent)"
  )


def _sample_batches(
    task,
    graphdef,
    params,
    examples: list[Any],
    batch_questions: int,
    prompt_len: int,
    config,
    seed: int,
    mesh=None,
    episodes=None,
):
  """Yields (example, [n] completion texts) for every question, in order.

  Every sampler call has batch_questions prompts (the last batch is padded
  with repeats of its first question, which are sampled but not returned),
  so the sampler compiles once. Call i draws with fold_in(key(seed), i).
  """
  n = config.num_samples
  base_key = jax.random.key(seed)
  for call, start in enumerate(range(0, len(examples), batch_questions)):
    chunk = examples[start : start + batch_questions]
    padded = chunk + chunk[:1] * (batch_questions - len(chunk))
    texts = sample_texts(
        task,
        graphdef,
        params,
        padded,
        prompt_len,
        jax.random.fold_in(base_key, call),
        config,
        mesh,
        episodes,
    )
    for q, ex in enumerate(chunk):
      yield ex, texts[q * n : (q + 1) * n]


def _check_ks(ks: Sequence[int], n_samples: int) -> list[int]:
  ks = [int(k) for k in ks]
  if not ks:
    raise errors.UserError("ks is empty; give at least one k")
  bad = [k for k in ks if not 1 <= k <= n_samples]
  if bad:
    raise errors.UserError(
        f"every k must be in [1, n_samples={n_samples}], got " f"{bad}"
    )
  return sorted(set(ks))


def sample_eval(
    task,
    graphdef,
    params,
    num_questions: int,
    n_samples: int,
    ks: Sequence[int],
    prompt_len: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_questions: Optional[int] = None,
    *,
    answer_fn: Optional[AnswerFn] = None,
    equivalent: Optional[voting.Equivalence] = None,
    split: str = "test",
    mesh=None,
    episodes=None,
) -> dict[str, Any]:
  """pass@k, maj@k and greedy accuracy of a policy on held-out questions.

  Draws n_samples completions for each of the first num_questions questions
  of `split`, scores each with `task.reward` (> 0 counts as correct) and
  votes with the extracted final answers. Deterministic given the seed and
  batch_questions (which decides how samples are split over sampler calls).

  Args:
    task: a `ugrad.tasks.Task`.
    graphdef: the policy's graph definition.
    params: its parameters.
    num_questions: how many questions (at most the split's size).
    n_samples: n, samples per question.
    ks: the k of pass@k and maj@k, each in [1, n].
    prompt_len: the fixed prompt length P.
    max_new_tokens: the completion budget.
    temperature: sampling temperature (0 is greedy).
    seed: seeds the samples, the maj@k subsets and the bootstrap.
    batch_questions: questions per sampler call (B, giving B * n rows); by
      default about 512 rows.
    answer_fn: completion text -> final answer (None when unparsable);
      default from `answer_functions(task)`.
    equivalent: when two answers are the same; default as for answer_fn.
    split: "test" (held out) or "train".
    mesh: the run's device mesh, where the sampler's prompts go (None:
      JAX's default placement).
    episodes: an `EpisodeSpec` to sample multi-turn episodes (None: one
      completion per sample).

  Returns:
    `stats.summarize`'s dict (num_questions, samples_per_question, pass@k,
    maj@k and their "_ci" intervals for every k), plus "greedy_acc",
    "greedy_acc_ci" and "correct_per_question" ([Q] correct sample counts).

  Raises:
    ValueError: for a k outside [1, n], n_samples < 1, num_questions < 1,
      batch_questions < 1, or a task without an answer reader.
  """
  if n_samples < 1:
    raise errors.UserError(f"n_samples must be >= 1, got {n_samples}")
  ks = _check_ks(ks, n_samples)
  if num_questions < 1:
    raise errors.UserError(f"num_questions must be >= 1, got {num_questions}")
  if answer_fn is None or equivalent is None:
    default_fn, default_eq = answer_functions(task)
    answer_fn = answer_fn or default_fn
    equivalent = equivalent or default_eq
  pool = task.examples(split)
  examples = [pool[i] for i in range(min(num_questions, len(pool)))]
  if batch_questions is None:
    batch_questions = max(1, _SAMPLE_ROWS // n_samples)
  if batch_questions < 1:
    raise errors.UserError(
        f"batch_questions must be >= 1, got {batch_questions}"
    )
  batch_questions = min(batch_questions, len(examples))
  tok = task.tokenizer
  config = sampling.SamplingConfig(
      max_new_tokens=max_new_tokens,
      eos_id=tok.eos_id,
      pad_id=tok.pad_id,
      num_samples=n_samples,
      temperature=temperature,
  )
  correct, answers = [], []
  for ex, texts in _sample_batches(
      task,
      graphdef,
      params,
      examples,
      batch_questions,
      prompt_len,
      config,
      seed,
      mesh,
      episodes,
  ):
    correct.append([task.reward(ex, text) > 0 for text in texts])
    answers.append([answer_fn(text) for text in texts])
  out = stats.summarize(
      correct, answers, ks=ks, maj_ks=ks, equivalent=equivalent, seed=seed
  )
  greedy = greedy_accuracy(
      task,
      graphdef,
      params,
      len(examples),
      prompt_len,
      max_new_tokens,
      split=split,
      episodes=episodes,
  )
  out["greedy_acc"] = greedy["greedy_acc"]
  out["greedy_acc_ci"] = greedy["greedy_acc_ci"]
  out["correct_per_question"] = [int(sum(row)) for row in correct]
  return out
