"""The arithmetic task's tools variant and the calculator's evaluator."""

import fractions

from ugrad.environments import calculator
from ugrad.tasks import arithmetic
from ugrad.tasks import CharTokenizer
from ugrad.tasks.tokenizer import DEFAULT_CHARS


def test_tools_variant_shows_the_call_on_its_share_of_questions():
  task = arithmetic.ArithmeticTask(
      num_operands=5, operators="+-*", tools=True, n_train=2000
  )
  plain = arithmetic.ArithmeticTask(
      num_operands=5, operators="+-*", n_train=2000
  )
  # The default characters keep their ids; the error mark is appended.
  default = CharTokenizer(DEFAULT_CHARS)
  assert task.tokenizer.vocab_size == default.vocab_size + 1
  assert task.tokenizer.encode(DEFAULT_CHARS) == default.encode(DEFAULT_CHARS)
  assert plain.tokenizer.vocab_size == default.vocab_size
  shown = 0
  for ex, same in zip(task.examples("train"), plain.examples("train")):
    assert ex.question == same.question and ex.answer == same.answer
    text = task.completion(ex)
    assert task.reward(ex, text) == 1.0
    if "(" in text:
      shown += 1
      # Each step is a call the calculator answers with the step's result.
      for line, gold in zip(text.split("\n"), same.solution.split("\n")):
        expression, value = gold.split("=")
        assert line == f"({expression})={value}"
        assert calculator.answer_call(f"({expression})") == f"={value}"
    else:
      assert text == plain.completion(same)
  assert 0.45 < shown / 2000 < 0.55


def test_evaluator_grammar_and_limits():
  f = fractions.Fraction
  assert calculator.evaluate("2+3*4") == 14  # usual precedence
  assert calculator.evaluate(" 8 / 4 / 2 ") == 1
  assert calculator.evaluate("-3*-2") == 6
  assert calculator.evaluate("1.5*2") == 3
  assert calculator.evaluate("1/3") == f(1, 3)
  for bad in ("", "2+", "*2", "2**3", "2^3", "(2)", "1e5", "a", "2 3", "1/0"):
    assert calculator.evaluate(bad) is None, bad
  assert calculator.evaluate("9" * 64) is not None
  assert calculator.evaluate("9" * 65) is None  # the length limit
  assert calculator.format_value(f(-1, 3)) == "-0.333333"
  assert calculator.call_expression("12\n(4*5)") == "4*5"
  assert calculator.call_expression("no call") is None
