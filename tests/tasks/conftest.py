"""A byte-level BPE tokenizer following the Tokenizer protocol.

Tasks must work with any protocol-following tokenizer, not only
CharTokenizer; this one merges characters and splits bytes, so character and
token offsets differ.
"""

import pytest
import tokenizers

from tests.helpers import bpe_util

_CORPUS = [
    "Natalia sold 48/2 = 24 clips in May.\n#### 72",
    "What is 1/2 + 1/4? The answer is \\boxed{\\frac{3}{4}}.",
    "48+27=75\n75-19=56\n#### 56",
]


class BpeTokenizer:
  """Wraps a `tokenizers.Tokenizer` in the ugrad Tokenizer protocol."""

  def __init__(self, tok: tokenizers.Tokenizer):
    self._tok = tok
    self.vocab_size = tok.get_vocab_size()
    self.pad_id = tok.token_to_id("<pad>")
    self.bos_id = None  # Like many HF tokenizers.
    self.eos_id = tok.token_to_id("</s>")

  def encode(self, text):
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids):
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


@pytest.fixture(scope="session")
def bpe():
  return BpeTokenizer(bpe_util.train_bpe(_CORPUS * 10, 320, ("<pad>", "</s>")))
