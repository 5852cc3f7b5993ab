"""A small byte-level BPE tokenizer trained in-process (no hub), for tests."""

from typing import Sequence

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers


def train_bpe(
    corpus: Sequence[str],
    vocab_size: int = 300,
    specials: Sequence[str] = ("<pad>", "<s>", "</s>"),
) -> tokenizers.Tokenizer:
  """A byte-level BPE (exact round trips) whose first ids are `specials`."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=list(specials),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tok.train_from_iterator(list(corpus), trainer)
  return tok
