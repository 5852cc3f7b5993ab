"""Final answers of real math data, compared with math-verify.

math-verify compares answers symbolically ("1,000" = "1000", "0.5" = "1/2",
"\\frac{1}{2}" = "0.5"). Its time limits use SIGALRM, which Python allows only
in the main thread, and outside it `parse` raises; so the limit applies in the
main thread and is switched off elsewhere (e.g. a reward thread pool).
"""

import functools
import threading
from typing import Optional

import math_verify

TIMEOUT_S = 5
_LATEX_ONLY = (math_verify.LatexExtractionConfig(),)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _timeout() -> Optional[int]:
  if threading.current_thread() is threading.main_thread():
    return TIMEOUT_S
  return None


@functools.lru_cache(maxsize=65536)
def _parse(text: str, boxed: bool) -> tuple:
  if boxed:
    return tuple(
        math_verify.parse(
            "\\boxed{" + text + "}",
            extraction_config=_LATEX_ONLY,
            parsing_timeout=_timeout(),
        )
    )
  return tuple(math_verify.parse(text, parsing_timeout=_timeout()))


def answers_match(gold: str, predicted: Optional[str], boxed: bool) -> bool:
  """Whether `predicted` is mathematically equal to `gold`.

  Args:
    gold: the gold final answer.
    predicted: the completion's final answer, or None when it has none.
    boxed: True for LaTeX answers taken out of \\boxed{} (MATH), False for
      plain text (GSM8K, where LaTeX and plain expressions are both tried).

  Returns:
    False when either side does not parse.
  """
  if predicted is None or not predicted.strip():
    return False
  gold_parsed = _parse(gold, boxed)
  pred_parsed = _parse(predicted, boxed)
  if not gold_parsed or not pred_parsed:
    return False
  return math_verify.verify(
      list(gold_parsed), list(pred_parsed), timeout_seconds=_timeout()
  )


def after_hashes(text: str) -> Optional[str]:
  """The rest of the line after the first "####", or None without one."""
  at = text.find("####")
  if at < 0:
    return None
  return text[at + 4 :].split("\n", 1)[0].strip()


def _braced(text: str, start: int) -> Optional[str]:
  """Contents of the brace group opening at text[start], or None if open."""
  depth = 0
  i = start
  while i < len(text):
    c = text[i]
    if c == "\\":
      i += 2  # An escaped character, e.g. \{, never opens or closes a group.
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1 : i]
    i += 1
  return None


def last_boxed(text: str) -> Optional[str]:
  """The contents of the last \\boxed{...} (or \\fbox{...}) in `text`.

  Nested braces are matched; the short form "\\boxed 5" gives "5". A last box
  that never closes (a truncated completion) gives None.
  """
  at, cmd = max((text.rfind(c), c) for c in _BOX_COMMANDS)
  if at < 0:
    return None
  i = at + len(cmd)
  if text.startswith("{", i):
    return _braced(text, i)
  if i < len(text) and text[i] == " ":
    short = text[i:].strip().split(None, 1)
    return short[0].rstrip("$.") if short else None
  return None
