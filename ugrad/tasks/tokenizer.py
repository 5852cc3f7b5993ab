"""The tokenizer protocol every task and data source relies on.

Any tokenizer with these five members works with every task: the embedded
`CharTokenizer` below, or a Hugging Face wrapper (ugrad/models/hf.py).
"""

from typing import Iterable, Optional, Protocol, Sequence

from ugrad import errors

# Enough for the embedded arithmetic task and simple plain-text math.
DEFAULT_CHARS = "0123456789+-*/=()#.,: \n"


class Tokenizer(Protocol):
  """What tasks and data sources need from a tokenizer.

  Attributes:
    vocab_size: number of token ids; every id is in [0, vocab_size).
    pad_id: id used to pad batches.
    bos_id: id put before every prompt, or None when the tokenizer has none.
    eos_id: id put after every completion.
  """

  vocab_size: int
  pad_id: int
  bos_id: Optional[int]
  eos_id: int

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, adding NO bos/eos."""

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, dropping pad/bos/eos ids."""


class CharTokenizer:
  """One token per character; PAD=0, BOS=1, EOS=2, then the characters.

  Decoding is the exact inverse of encoding, so a character offset in a
  completion is also its token offset (step ends map to tokens for free).
  """

  pad_id = 0
  bos_id = 1
  eos_id = 2
  _NUM_SPECIAL = 3

  def __init__(self, chars: Sequence[str] = DEFAULT_CHARS):
    """Builds the vocabulary.

    Args:
      chars: the characters, in id order (ids start at 3); each a single
        character, no duplicates.
    """
    chars = list(chars)
    for c in chars:
      if len(c) != 1:
        raise errors.UserError(
            f"CharTokenizer: {c!r} is not a single character"
        )
    dupes = sorted({c for c in chars if chars.count(c) > 1})
    if dupes:
      raise errors.UserError(f"CharTokenizer: duplicate characters {dupes!r}")
    self.chars = "".join(chars)
    self._ids = {c: i + self._NUM_SPECIAL for i, c in enumerate(chars)}
    self.vocab_size = len(chars) + self._NUM_SPECIAL

  @classmethod
  def for_texts(
      cls, texts: Iterable[str], base: str = DEFAULT_CHARS
  ) -> "CharTokenizer":
    """A tokenizer covering `base` plus every character seen in `texts`.

    Args:
      texts: the corpus (e.g. every prompt and gold completion of a task).
      base: characters always included, first, so ids of `base` are stable.

    Returns:
      A CharTokenizer whose extra characters are sorted after `base`.
    """
    seen = set()
    for text in texts:
      seen.update(text)
    extra = sorted(seen.difference(base))
    return cls(list(base) + extra)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (no bos/eos); unknown characters raise."""
    try:
      return [self._ids[c] for c in text]
    except KeyError:
      pos = next(i for i, c in enumerate(text) if c not in self._ids)
      raise errors.UserError(
          f"CharTokenizer: unknown character {text[pos]!r} at position "
          f"{pos} of {text!r}; known characters: {self.chars!r}"
      ) from None

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` (ints, or a 1-D numpy/JAX array), dropping specials."""
    out = []
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise errors.UserError(
            f"CharTokenizer: id {i} out of range [0, {self.vocab_size})"
        )
      if i < self._NUM_SPECIAL:
        continue
      out.append(self.chars[i - self._NUM_SPECIAL])
    return "".join(out)
