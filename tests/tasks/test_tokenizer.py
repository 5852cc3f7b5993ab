"""CharTokenizer and the token helpers."""

import jax.numpy as jnp
import numpy as np
import pytest

from ugrad.tasks import base
from ugrad.tasks.tokenizer import CharTokenizer


def test_specials_and_round_trip():
  tok = CharTokenizer()
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  text = "48+27=75\n75-19=56\n#### 56"
  ids = tok.encode(text)
  assert len(ids) == len(text)
  assert min(ids) >= 3 and max(ids) < tok.vocab_size
  assert tok.decode(ids) == text


def test_decode_drops_specials_and_takes_arrays():
  tok = CharTokenizer()
  ids = [tok.bos_id] + tok.encode("1+2=3") + [tok.eos_id, tok.pad_id]
  assert tok.decode(ids) == "1+2=3"
  assert tok.decode(np.asarray(ids, np.int32)) == "1+2=3"
  assert tok.decode(jnp.asarray(ids)) == "1+2=3"


def test_unknown_character_is_named():
  with pytest.raises(ValueError, match=r"unknown character 'x' at position 2"):
    CharTokenizer().encode("1+x")


@pytest.mark.parametrize("bad_id", [-1, 10_000])
def test_out_of_range_id_raises(bad_id):
  with pytest.raises(ValueError, match="out of range"):
    CharTokenizer().decode([5, bad_id])


def test_bad_alphabets_raise():
  with pytest.raises(ValueError, match="duplicate"):
    CharTokenizer("0123+-+")
  with pytest.raises(ValueError, match="single character"):
    CharTokenizer(["0", "ab"])


def test_for_texts_covers_corpus_and_keeps_base_ids():
  tok = CharTokenizer.for_texts(["héllo 42", "x=1"])
  assert tok.decode(tok.encode("héllo 42 x=1")) == "héllo 42 x=1"
  assert tok.encode("0123") == CharTokenizer().encode("0123")


def test_encode_prompt_and_completion():
  tok = CharTokenizer()
  assert base.encode_prompt(tok, "1+2=") == [1] + tok.encode("1+2=")
  assert base.encode_completion(tok, "3") == tok.encode("3") + [2]


def test_encode_prompt_without_bos(bpe):
  assert base.encode_prompt(bpe, "1+2=") == bpe.encode("1+2=")
  assert base.encode_completion(bpe, "3")[-1] == bpe.eos_id


def test_line_spans_skip_blank_lines_and_strip():
  text = "ab\n\n  cd \n   \nef"
  spans = base.line_spans(text)
  assert [text[s : e + 1] for s, e in spans] == ["ab", "cd", "ef"]
  assert base.line_step_ends(text) == [1, 7, 15]


def test_chars_to_tokens_char_tokenizer_is_identity():
  tok = CharTokenizer()
  ids = tok.encode("12+3=15\n#### 15")
  assert base.chars_to_tokens(tok, ids, [0, 6, 14]) == [0, 6, 14]


def test_chars_to_tokens_bpe(bpe):
  text = "Natalia sold 48 clips\n#### 72 é"
  ids = bpe.encode(text) + [bpe.eos_id]
  assert bpe.decode(ids) == text
  assert len(ids) < len(text)  # Merges happened.
  offsets = list(range(len(text)))
  tokens = base.chars_to_tokens(bpe, ids, offsets)
  for c, j in zip(offsets, tokens):
    assert len(bpe.decode(ids[:j])) <= c < len(bpe.decode(ids[: j + 1]))
  with pytest.raises(ValueError, match="outside"):
    base.chars_to_tokens(bpe, ids, [len(text)])
