"""GSM8K- and MATH-style JSONL through the common Task interface."""

import json
import threading

import pytest

from ugrad import tasks
from ugrad.tasks import math_answers

GSM8K_ROWS = [
    {
        "question": "Natalia sold 48 clips in April and half as many in May. "
        "How many in total?",
        "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\n"
        "In total 48+24 = <<48+24=72>>72 clips.\n#### 72",
    },
    {
        "question": "A car costs 500 dollars twice. Total?",
        "answer": "500*2 = <<500*2=1000>>1000\n#### 1,000",
    },
    {"question": "Half of one?", "answer": "1/2 = 0.5\n#### 0.5"},
]

MATH_ROWS = [
    {
        "problem": "Compute $\\frac{1}{4}+\\frac{1}{4}$.",
        "solution": "We get $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
    },
    {
        "problem": "Solve $x^2 = 4$ for positive $x$; give $(x, x^2)$.",
        "solution": "First \\boxed{3} is wrong; the pair is "
        "$\\boxed{\\left( 2, {4} \\right)}$.",
        "level": "Level 1",
    },
]


def _write(path, rows):
  path.write_text(
      "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
  )
  return str(path)


@pytest.fixture
def gsm8k(tmp_path):
  return tasks.make_task(
      "gsm8k",
      train_path=_write(tmp_path / "train.jsonl", GSM8K_ROWS),
      test_path=_write(tmp_path / "test.jsonl", [GSM8K_ROWS[0], ""]),
  )


@pytest.fixture
def math(tmp_path):
  return tasks.make_task(
      "math", test_path=_write(tmp_path / "test.jsonl", MATH_ROWS)
  )


def test_gsm8k_rows(gsm8k):
  train = gsm8k.examples("train")
  assert len(train) == 3 and len(gsm8k.examples("test")) == 1
  ex = train[0]
  assert ex.answer == "72"
  assert ex.solution == (
      "In May she sold 48/2 = 24 clips.\n" "In total 48+24 = 72 clips."
  )
  assert gsm8k.completion(ex) == ex.solution + "\n#### 72"
  assert gsm8k.prompt(ex) == ex.question + "\n"
  assert train[1].answer == "1,000"


def test_gsm8k_keeps_annotations_on_request(tmp_path):
  task = tasks.gsm8k_task(
      train_path=_write(tmp_path / "t.jsonl", GSM8K_ROWS),
      strip_annotations=False,
  )
  assert "<<48/2=24>>" in task.examples("train")[0].solution


@pytest.mark.parametrize(
    "row,completion,reward",
    [
        (0, "so\n#### 72", 1.0),
        (0, "#### 72.0", 1.0),
        (0, "#### 73", 0.0),
        (0, "72", 0.0),  # No "####".
        (0, "#### ", 0.0),
        (0, "#### 72\n#### 73", 1.0),
        (1, "#### 1000", 1.0),  # Gold "1,000".
        (1, "#### 1,000 dollars", 1.0),
        (1, "#### 100", 0.0),
        (2, "#### 1/2", 1.0),  # Gold "0.5".
        (2, "#### \\frac{1}{2}", 1.0),
        (2, "#### 0.25", 0.0),
    ],
)
def test_gsm8k_reward_is_symbolic(gsm8k, row, completion, reward):
  assert gsm8k.reward(gsm8k.examples("train")[row], completion) == reward


def test_gold_completions_score_one(gsm8k, math):
  for task, split in ((gsm8k, "train"), (math, "test")):
    for ex in task.examples(split):
      assert task.reward(ex, task.completion(ex)) == 1.0


def test_math_rows_and_reward(math):
  ex, pair = math.examples("test")
  assert ex.answer == "\\frac{1}{2}"
  assert pair.answer == "\\left( 2, {4} \\right)"  # Last box, nested braces.
  assert math.completion(ex) == ex.solution
  assert math.reward(ex, "so \\boxed{0.5}") == 1.0
  assert math.reward(ex, "so \\boxed{\\dfrac{2}{4}}") == 1.0
  assert math.reward(ex, "\\boxed{0.5} no, \\boxed{1}") == 0.0
  assert math.reward(ex, "\\boxed{1} no, \\boxed{\\frac12}") == 1.0
  assert math.reward(ex, "0.5") == 0.0  # No box.
  assert math.reward(ex, "\\boxed{\\frac{1}{2}") == 0.0  # Never closed.
  assert math.reward(pair, "\\boxed{(2,4)}") == 1.0
  assert math.reward(pair, "\\boxed{(4,2)}") == 0.0


def test_last_boxed():
  lb = math_answers.last_boxed
  assert lb("\\boxed{a} \\boxed{\\frac{b}{c^{2}}}") == "\\frac{b}{c^{2}}"
  assert lb("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
  assert lb("\\fbox{7}") == "7"
  assert lb("hence \\boxed 5.") == "5"
  assert lb("\\boxed{open") is None and lb("none") is None


def test_no_step_labels_but_line_steps(gsm8k):
  ex = gsm8k.examples("train")[0]
  with pytest.raises(NotImplementedError, match="step labels"):
    gsm8k.step_labels(ex, gsm8k.completion(ex))
  text = "a b\n\nc\n#### 72"
  assert gsm8k.step_ends(text) == [2, 5, 13]


def test_reward_in_a_worker_thread(gsm8k, math):
  """math-verify's SIGALRM timeout must not break worker-thread rewards."""
  results = []

  def work():
    results.append(gsm8k.reward(gsm8k.examples("train")[2], "#### 2/4"))
    results.append(math.reward(math.examples("test")[0], "\\boxed{2/4}"))

  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
  assert results == [1.0, 1.0]


def test_default_tokenizer_covers_data(gsm8k, math):
  for task, split in ((gsm8k, "train"), (math, "test")):
    tok = task.tokenizer
    for ex in task.examples(split):
      prompt_ids, completion_ids = tasks.encode_example(task, ex)
      assert prompt_ids[0] == tok.bos_id and completion_ids[-1] == tok.eos_id
      assert tok.decode(completion_ids) == task.completion(ex)


def test_any_tokenizer_works(tmp_path, bpe):
  task = tasks.make_task(
      "gsm8k",
      train_path=_write(tmp_path / "t.jsonl", GSM8K_ROWS),
      tokenizer=bpe,
  )
  ex = task.examples("train")[0]
  prompt_ids, completion_ids = tasks.encode_example(task, ex)
  assert prompt_ids == bpe.encode(task.prompt(ex))  # No BOS to add.
  text = bpe.decode(completion_ids)
  assert task.reward(ex, text) == 1.0
  ends = tasks.chars_to_tokens(bpe, completion_ids, task.step_ends(text))
  assert len(ends) == 3 and ends == sorted(ends)


@pytest.mark.parametrize(
    "name,rows,line,match",
    [
        ("gsm8k", [GSM8K_ROWS[0], "{not json"], 2, "invalid JSON"),
        (
            "gsm8k",
            [GSM8K_ROWS[0], "", {"question": "q"}],
            3,
            "missing field 'answer'",
        ),
        ("gsm8k", [{"question": "q", "answer": "42"}], 1, "no '####'"),
        (
            "gsm8k",
            [{"question": "q", "answer": "x ####  "}],
            1,
            "nothing after",
        ),
        ("gsm8k", [{"question": 3, "answer": "#### 1"}], 1, "not str"),
        ("gsm8k", [["question", "answer"]], 1, "not an object"),
        (
            "math",
            [MATH_ROWS[0], {"problem": "p", "solution": "it is 4"}],
            2,
            "no complete \\\\boxed",
        ),
        ("math", [{"problem": "p", "solution": "\\boxed{4"}], 1, "boxed"),
        (
            "math",
            [{"question": "p", "answer": "#### 4"}],
            1,
            "missing field 'problem'",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, rows, line, match):
  path = _write(tmp_path / "bad.jsonl", rows)
  with pytest.raises(tasks.DataError, match=match) as info:
    tasks.make_task(name, train_path=path)
  assert str(info.value).startswith(f"{path}:{line}: ")


def test_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path):
  path = tmp_path / "latin1.jsonl"
  good = json.dumps({"question": "q", "answer": "#### 1"}).encode()
  latin1 = b'{"question": "caf\xe9", "answer": "#### 2"}\n'
  path.write_bytes(good + b"\n" + latin1)
  with pytest.raises(tasks.DataError) as info:
    tasks.make_task("gsm8k", train_path=str(path))
  assert str(info.value) == (
      f"{path}:2: not UTF-8 text (byte 0xe9 at " "column 18)"
  )


def test_empty_file_and_missing_paths(tmp_path):
  path = _write(tmp_path / "empty.jsonl", ["", "  "])
  with pytest.raises(tasks.DataError, match="no rows"):
    tasks.make_task("gsm8k", train_path=path)
  with pytest.raises(ValueError, match="train_path, test_path"):
    tasks.make_task("math")
  task = tasks.make_task(
      "gsm8k", train_path=_write(tmp_path / "t.jsonl", GSM8K_ROWS)
  )
  with pytest.raises(ValueError, match="no test_path"):
    task.examples("test")


def test_prompt_template(tmp_path):
  path = _write(tmp_path / "t.jsonl", GSM8K_ROWS)
  task = tasks.make_task(
      "gsm8k", train_path=path, prompt_template="Q: {question}\nA:\n"
  )
  ex = task.examples("train")[0]
  assert task.prompt(ex) == f"Q: {ex.question}\nA:\n"
  with pytest.raises(ValueError, match="no {question}"):
    tasks.make_task("gsm8k", train_path=path, prompt_template="Q:")


def test_make_task_lists_valid_names():
  with pytest.raises(
      ValueError, match="unknown task 'mmlu'; valid: " "arithmetic, gsm8k, math"
  ):
    tasks.make_task("mmlu")
  assert isinstance(
      tasks.make_task("arithmetic", n_train=10), tasks.ArithmeticTask
  )


def test_a_validation_file_is_its_own_split(tmp_path):
  task = tasks.make_task(
      "gsm8k",
      train_path=_write(tmp_path / "train.jsonl", GSM8K_ROWS),
      validation_path=_write(tmp_path / "dev.jsonl", GSM8K_ROWS[:1]),
  )
  assert [e.answer for e in task.examples("validation")] == [
      task.examples("train")[0].answer
  ]
  with pytest.raises(ValueError, match="no test_path was given"):
    task.examples("test")
