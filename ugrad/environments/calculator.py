"""The calculator tool: its call format and a small safe evaluator.

A call is an expression in parentheses at the end of a policy turn,
"(48*27)"; its answer is "=" and the value, "=1296", or "=?" when the call
is malformed (an empty or over-long expression, a character other than
digits, ".", "+", "-", "*", "/" and spaces, two operators in a row, a
division by zero). Every character is in the embedded task's tokenizer
except "?", which the tools task adds (`ugrad.tasks.arithmetic`).

The evaluator reads the expression itself (numbers and + - * / with the
usual precedence, a leading minus on a number allowed) with exact rational
arithmetic; nothing the model writes is ever passed to `eval` or run.
"""

import fractions
import re
from typing import Optional

CALL_OPEN = "("
CALL_CLOSE = ")"
RESULT = "="
ERROR = "?"
MAX_EXPRESSION = 64  # characters
_DECIMALS = 6
_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([+\-*/]))")


def _tokens(expression: str) -> Optional[list]:
  """Numbers (Fractions) and operator characters, or None on a character
  outside the grammar."""
  out, at = [], 0
  expression = expression.rstrip()
  while at < len(expression):
    m = _TOKEN_RE.match(expression, at)
    if m is None:
      return None
    number, op = m.groups()
    out.append(fractions.Fraction(number) if number else op)
    at = m.end()
  return out


def _signed_numbers(tokens: list) -> Optional[list]:
  """Folds a minus that starts the expression or follows an operator into
  the number after it; None when the operators and numbers do not
  alternate (number, op, number, ..., number)."""
  out, expect_number = [], True
  i = 0
  while i < len(tokens):
    t = tokens[i]
    if expect_number:
      sign = 1
      if t == "-" and i + 1 < len(tokens):
        sign, i = -1, i + 1
        t = tokens[i]
      if not isinstance(t, fractions.Fraction):
        return None
      out.append(sign * t)
    elif isinstance(t, fractions.Fraction):
      return None
    else:
      out.append(t)
    expect_number = not expect_number
    i += 1
  return out if out and not expect_number else None


def evaluate(expression: str) -> Optional[fractions.Fraction]:
  """The exact value of `expression`, or None when it is malformed (see the
  module docstring) or divides by zero."""
  if not expression.strip() or len(expression) > MAX_EXPRESSION:
    return None
  tokens = _tokens(expression)
  items = _signed_numbers(tokens) if tokens else None
  if items is None:
    return None
  # Products and quotients first, then sums, both left to right.
  terms, ops = [items[0]], []
  for op, value in zip(items[1::2], items[2::2]):
    if op in "*/":
      if op == "/" and value == 0:
        return None
      terms[-1] = terms[-1] * value if op == "*" else terms[-1] / value
    else:
      terms.append(value)
      ops.append(op)
  total = terms[0]
  for op, value in zip(ops, terms[1:]):
    total = total + value if op == "+" else total - value
  return total


def format_value(value: fractions.Fraction) -> str:
  """An integer as digits, any other value with at most 6 decimals."""
  if value.denominator == 1:
    return str(value.numerator)
  text = f"{float(value):.{_DECIMALS}f}".rstrip("0").rstrip(".")
  return "0" if text == "-0" else text


def call_expression(turn: str) -> Optional[str]:
  """The expression of the call that ends `turn` (the text after the last
  CALL_OPEN, before the final CALL_CLOSE), or None when there is none."""
  if not turn.endswith(CALL_CLOSE):
    return None
  at = turn.rfind(CALL_OPEN)
  return None if at < 0 else turn[at + 1 : -1]


def answer_call(turn: str) -> str:
  """The observation for a policy turn ending in a call: "=VALUE", or
  "=?" when the call is malformed."""
  expression = call_expression(turn)
  value = evaluate(expression) if expression is not None else None
  return RESULT + (ERROR if value is None else format_value(value))


def call_text(expression: str) -> str:
  """What the policy writes to call the tool on `expression`."""
  return f"{CALL_OPEN}{expression}{CALL_CLOSE}"
