"""Hugging Face tokenizers (tokenizer.json) behind ugrad's tokenizer protocol.

Read and written with the `tokenizers` library; neither torch nor
transformers is imported.
"""

import pathlib
from typing import Any, Optional, Sequence

import numpy as np
import tokenizers

from ugrad import errors
from ugrad.models import chat_template as chat_template_lib
from ugrad.models import hf_config


class HFTokenizer:
  """A `tokenizers.Tokenizer` behind ugrad's tokenizer protocol.

  Attributes:
    vocab_size: number of ids the tokenizer can produce (added tokens
      included); the model's embedding may be larger.
    pad_id: id used to pad batches (eos when the files name no pad token).
    bos_id: beginning-of-sequence id, or None.
    eos_id: end-of-sequence id; generation stops on it.
    chat_template: the directory's `ChatTemplate`, or None.
  """

  def __init__(
      self,
      tokenizer: tokenizers.Tokenizer,
      *,
      eos_id: int,
      pad_id: Optional[int] = None,
      bos_id: Optional[int] = None,
      chat_template: Optional[chat_template_lib.ChatTemplate] = None,
  ):
    self.tokenizer = tokenizer
    self.chat_template = chat_template
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.eos_id = _check_id(eos_id, "eos_id", self.vocab_size)
    self.pad_id = _check_id(
        self.eos_id if pad_id is None else pad_id, "pad_id", self.vocab_size
    )
    self.bos_id = (
        None if bos_id is None else _check_id(bos_id, "bos_id", self.vocab_size)
    )

  @classmethod
  def from_directory(cls, path: hf_config.PathLike) -> "HFTokenizer":
    """Loads tokenizer.json and the special ids from a checkpoint directory.

    Each special id comes from the first of these that names it:
    tokenizer_config.json, special_tokens_map.json (token strings), then
    generation_config.json, config.json (`*_token_id`, first element of a
    list). pad falls back to eos; bos may stay None; no eos is an error.
    The chat template, when the directory has one, comes with it.

    Args:
      path: directory containing tokenizer.json.

    Returns:
      The wrapped tokenizer.
    """
    path = pathlib.Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
      raise errors.MissingInput(f"No tokenizer.json in {path}")
    tokenizer = tokenizers.Tokenizer.from_file(str(file))
    ids = {
        kind: _special_id(path, tokenizer, kind)
        for kind in ("bos", "eos", "pad")
    }
    if ids["eos"] is None:
      raise errors.UserError(
          f"No eos token in {path}: looked for eos_token in "
          "tokenizer_config.json / special_tokens_map.json and eos_token_id "
          "in generation_config.json / config.json"
      )
    return cls(
        tokenizer,
        eos_id=ids["eos"],
        pad_id=ids["pad"],
        bos_id=ids["bos"],
        chat_template=chat_template_lib.ChatTemplate.from_directory(path),
    )

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos or eos."""
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, dropping pad, bos, eos and other special tokens."""
    special = {self.pad_id, self.bos_id, self.eos_id}
    kept = [
        i
        for i in np.asarray(ids, np.int64).reshape(-1).tolist()
        if i not in special
    ]
    return self.tokenizer.decode(kept, skip_special_tokens=True)

  def save(self, path: hf_config.PathLike) -> None:
    """Writes tokenizer.json and a tokenizer_config.json naming the specials
    (and holding the chat template, when there is one)."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    self.tokenizer.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for kind, token_id in (
        ("bos", self.bos_id),
        ("eos", self.eos_id),
        ("pad", self.pad_id),
    ):
      if token_id is not None:
        config[f"{kind}_token"] = self.tokenizer.id_to_token(token_id)
    if self.chat_template is not None:
      source = self.chat_template.source
      if isinstance(source, dict):
        source = [{"name": k, "template": v} for k, v in source.items()]
      # Other specials the template may name; bos/eos/pad are the ids'.
      config = {
          **{
              k: v
              for k, v in self.chat_template.special_tokens.items()
              if k not in ("bos_token", "eos_token", "pad_token")
          },
          **config,
      }
      config["chat_template"] = source
    hf_config.write_json(path / "tokenizer_config.json", config)


def _check_id(token_id: Any, name: str, vocab_size: int) -> int:
  if not 0 <= int(token_id) < vocab_size:
    raise errors.UserError(
        f"{name}={token_id} outside the vocabulary [0, " f"{vocab_size})"
    )
  return int(token_id)


def _special_id(
    path: pathlib.Path, tokenizer: tokenizers.Tokenizer, kind: str
) -> Optional[int]:
  """The id of special token `kind` (bos/eos/pad) named in `path`'s files."""
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    token = hf_config.read_json(path / name).get(f"{kind}_token")
    if isinstance(token, dict):
      token = token.get("content")
    if token is not None:
      token_id = tokenizer.token_to_id(token)
      if token_id is None:
        raise errors.UserError(
            f"{path / name}: {kind}_token {token!r} is not in "
            "tokenizer.json's vocabulary"
        )
      return token_id
  for name in ("generation_config.json", "config.json"):
    token_id = hf_config.read_json(path / name).get(f"{kind}_token_id")
    if isinstance(token_id, list):
      token_id = token_id[0] if token_id else None
    if token_id is not None:
      return int(token_id)
  return None
