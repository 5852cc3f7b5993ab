"""Hugging Face chat templates, rendered as transformers renders them.

An instruct model's directory carries its chat format as a Jinja template:
a chat_template.jinja file (as newer transformers write it), else the
`chat_template` field of tokenizer_config.json (a string, or a list of
{"name", "template"} of which "default" is used, or "tool_use" when tools
are given). `ChatTemplate.render` gives the text of transformers'
`apply_chat_template(..., tokenize=False)`: the same sandboxed Jinja
environment (trim_blocks, lstrip_blocks, loop controls, a `tojson` that
keeps non-ASCII), the same variables (messages, add_generation_prompt,
tools when given, and the special tokens bos_token, eos_token, ... named in
tokenizer_config.json / special_tokens_map.json) and helpers
(raise_exception, strftime_now). `encode_chat` encodes that text without
adding specials, which gives apply_chat_template's token ids.
"""

import datetime
import json
import pathlib
from typing import Any, Mapping, Optional, Sequence, Union

import jinja2
from jinja2 import ext as jinja2_ext
from jinja2 import nodes as jinja2_nodes
from jinja2 import sandbox as jinja2_sandbox

from ugrad import errors
from ugrad.models import hf_config

Message = Mapping[str, Any]
Source = Union[str, dict[str, str]]

# The special tokens transformers passes to every template.
_SPECIAL_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_NO_TEMPLATE = (
    "carries no chat template (no chat_template.jinja, no chat_template "
    "field in tokenizer_config.json)"
)


class ChatTemplate:
  """A directory's chat template and the special tokens it may name.

  Attributes:
    source: the Jinja text, or {name: Jinja text} for named templates.
    special_tokens: {"bos_token": "<s>", ...} as the directory names them
      (only those it names; "additional_special_tokens" a list).
  """

  def __init__(self, source: Source, special_tokens: Mapping[str, Any]):
    if isinstance(source, dict) and not source:
      raise errors.UserError("a chat template with no named templates")
    self.source = source
    self.special_tokens = dict(special_tokens)
    self._compiled: dict[str, jinja2.Template] = {}

  @classmethod
  def from_directory(cls, path: hf_config.PathLike) -> Optional["ChatTemplate"]:
    """The chat template of Hugging Face directory `path`, or None."""
    path = pathlib.Path(path)
    config = hf_config.read_json(path / "tokenizer_config.json")
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
      source: Any = jinja_file.read_text(encoding="utf-8")
    else:
      source = config.get("chat_template")
    if source is None:
      return None
    if isinstance(source, list) and all(
        isinstance(t, dict) and {"name", "template"} <= set(t) for t in source
    ):
      source = {t["name"]: t["template"] for t in source}
    if not isinstance(source, (str, dict)):
      raise errors.UserError(
          f"{path / 'tokenizer_config.json'}: chat_template is neither a "
          'string nor a list of {"name", "template"} objects'
      )
    return cls(source, special_tokens(path))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-able record; `from_dict` rebuilds the template from it."""
    return {"source": self.source, "special_tokens": self.special_tokens}

  @classmethod
  def from_dict(cls, record: Mapping[str, Any]) -> "ChatTemplate":
    return cls(record["source"], record["special_tokens"])

  def text(self, tools: Optional[Sequence[Any]] = None) -> str:
    """The Jinja text used (of named ones: "tool_use" with tools, else
    "default", as transformers picks)."""
    if isinstance(self.source, str):
      return self.source
    if tools is not None and "tool_use" in self.source:
      return self.source["tool_use"]
    if "default" not in self.source:
      raise errors.UserError(
          "the chat template has named templates "
          f"{sorted(self.source)} and none is called 'default'"
      )
    return self.source["default"]

  def render(
      self,
      messages: Sequence[Message],
      *,
      add_generation_prompt: bool = False,
      tools: Optional[Sequence[Any]] = None,
      **kwargs: Any,
  ) -> str:
    """The conversation as the model's chat format, as text.

    Args:
      messages: dicts with a "role" (system, user, assistant, tool, or any
        the template knows) and usually "content"; keys whose value is None
        are dropped, as transformers drops them.
      add_generation_prompt: end with the header of an assistant turn, so
        the model's next tokens are its answer.
      tools: JSON schemas (dicts) of the tools the model may call, or None.
      **kwargs: further template variables (override special tokens).

    Returns:
      The rendered text (specials such as <|im_start|> written out).

    Raises:
      errors.UserError: a malformed message list, or the template's own
        `raise_exception` (e.g. roles that do not alternate).
    """
    chat = _checked_messages(messages)
    variables = {**self.special_tokens, **kwargs}
    text = self.text(tools)
    if text not in self._compiled:
      self._compiled[text] = _environment().from_string(text)
    try:
      return self._compiled[text].render(
          messages=chat,
          tools=None if tools is None else _checked_tools(tools),
          documents=None,
          add_generation_prompt=add_generation_prompt,
          **variables,
      )
    except jinja2.TemplateError as e:
      raise errors.UserError(f"chat template: {e}") from None


def encode_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = False,
    tools: Optional[Sequence[Any]] = None,
    **kwargs: Any,
) -> list[int]:
  """Token ids of `messages` in `tokenizer`'s chat format.

  The ids of `apply_chat_template(messages, tokenize=True)`: the rendered
  text (`ChatTemplate.render`, same arguments) encoded without adding bos
  or eos (the template writes the specials it wants).

  Args:
    tokenizer: an `HFTokenizer` carrying a chat template.
    messages: see `ChatTemplate.render`.
    add_generation_prompt: see `ChatTemplate.render`.
    tools: see `ChatTemplate.render`.
    **kwargs: see `ChatTemplate.render`.

  Returns:
    The token ids.
  """
  template = require_chat_template(tokenizer)
  text = template.render(
      messages,
      add_generation_prompt=add_generation_prompt,
      tools=tools,
      **kwargs,
  )
  return tokenizer.encode(text)


def require_chat_template(tokenizer: Any) -> ChatTemplate:
  """`tokenizer`'s chat template; a one-line UserError when it has none."""
  template = getattr(tokenizer, "chat_template", None)
  if template is not None:
    return template
  if not hasattr(tokenizer, "chat_template"):
    raise errors.UserError(
        f"chat templates need a Hugging Face tokenizer, not a "
        f"{type(tokenizer).__name__} (init_from an instruct model's "
        "directory)"
    )
  raise errors.UserError(f"the Hugging Face tokenizer {_NO_TEMPLATE}")


def special_tokens(path: pathlib.Path) -> dict[str, Any]:
  """The special-token strings `path` names, as transformers' template
  variables: tokenizer_config.json first, then special_tokens_map.json."""
  found: dict[str, Any] = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    config = hf_config.read_json(path / name)
    for key in (*_SPECIAL_NAMES, "additional_special_tokens"):
      value = config.get(key)
      if isinstance(value, list):
        value = [_content(v) for v in value]
      else:
        value = _content(value)
      if value is not None:
        found[key] = value
  return found


def _content(token: Any) -> Optional[str]:
  return token.get("content") if isinstance(token, dict) else token


def _checked_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
  """Plain dict copies of `messages`, None values dropped."""
  if isinstance(messages, (str, bytes)) or not messages:
    raise errors.UserError("a chat needs a non-empty list of messages")
  chat = []
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping) or not isinstance(
        message.get("role"), str
    ):
      raise errors.UserError(
          f"message {i} is not a dict with a string 'role': {message!r}"
      )
    chat.append(
        _plain(
            {k: v for k, v in message.items() if v is not None}, f"message {i}"
        )
    )
  return chat


def _checked_tools(tools: Sequence[Any]) -> list[Any]:
  if isinstance(tools, (str, bytes, Mapping)):
    raise errors.UserError("tools must be a list of JSON schemas (dicts)")
  for i, tool in enumerate(tools):
    if not isinstance(tool, Mapping):
      raise errors.UserError(
          f"tool {i} is a {type(tool).__name__}, not a JSON schema (dict)"
      )
  return _plain(list(tools), "tools")


def _plain(value: Any, what: str) -> Any:
  """A copy of `value` made of plain JSON types only, so the sandboxed
  template never sees the caller's objects."""
  try:
    return json.loads(json.dumps(value))
  except (TypeError, ValueError) as e:
    raise errors.UserError(f"{what} is not JSON data: {e}") from None


class _Generation(jinja2_ext.Extension):
  """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask
  tag): renders its body unchanged."""

  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    call = self.call_method("_body")
    return jinja2_nodes.CallBlock(call, [], [], body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


def _raise_exception(message: str):
  raise jinja2.TemplateError(message)


def _tojson(
    value, ensure_ascii=False, indent=None, separators=None, sort_keys=False
):
  return json.dumps(
      value,
      ensure_ascii=ensure_ascii,
      indent=indent,
      separators=separators,
      sort_keys=sort_keys,
  )


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


def _environment() -> jinja2_sandbox.ImmutableSandboxedEnvironment:
  env = jinja2_sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True,
      lstrip_blocks=True,
      extensions=[_Generation, jinja2_ext.loopcontrols],
  )
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env
