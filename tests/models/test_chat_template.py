"""Chat templates: token for token against transformers' apply_chat_template
on tokenizer directories written here."""

import json

import pytest
import transformers

from tests.helpers import chat_util
from ugrad import errors
from ugrad import models
from ugrad.models import chat_template as chat_lib

STYLES = ("qwen", "llama3")
SYSTEM_USER = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is 12 plus 30?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluates an arithmetic expression (× and ÷ too).",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    }
]
CALL = {"name": "calculator", "arguments": {"expression": "12 + 30"}}
WITH_TOOL = SYSTEM_USER + [
    {"role": "assistant", "content": "Let me compute it.", "tool_calls": None},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "The answer is 42."},
    {"role": "user", "content": "And 48/2 − 1? Café"},
]


def _reference(path, messages, **kwargs):
  hf = transformers.AutoTokenizer.from_pretrained(str(path))
  return list(
      hf.apply_chat_template(
          messages, tokenize=True, return_dict=False, **kwargs
      )
  )


@pytest.fixture(scope="module", params=STYLES)
def chat_dir(request, tmp_path_factory):
  return chat_util.write_dir(
      tmp_path_factory.mktemp(request.param), request.param
  )


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_system_and_user_match_transformers(chat_dir, generation_prompt):
  tokenizer = models.HFTokenizer.from_directory(chat_dir)
  ids = models.encode_chat(
      tokenizer, SYSTEM_USER, add_generation_prompt=generation_prompt
  )
  assert ids == _reference(
      chat_dir, SYSTEM_USER, add_generation_prompt=generation_prompt
  )
  # The specials are single tokens, not spelled out in pieces.
  assert tokenizer.eos_id in ids


def test_multi_turn_with_a_tool_message_matches_transformers(chat_dir):
  tokenizer = models.HFTokenizer.from_directory(chat_dir)
  ids = models.encode_chat(tokenizer, WITH_TOOL, add_generation_prompt=True)
  assert ids == _reference(chat_dir, WITH_TOOL, add_generation_prompt=True)
  text = tokenizer.chat_template.render(WITH_TOOL)
  assert "42" in text and "Café" in text


def test_tools_and_tool_calls_match_transformers(tmp_path):
  path = chat_util.write_dir(tmp_path, "qwen")
  messages = SYSTEM_USER + [
      {"role": "assistant", "content": "", "tool_calls": [{"function": CALL}]},
      {"role": "tool", "content": "42"},
      {"role": "tool", "content": "again 42"},
  ]
  tokenizer = models.HFTokenizer.from_directory(path)
  ids = models.encode_chat(
      tokenizer, messages, add_generation_prompt=True, tools=TOOLS
  )
  assert ids == _reference(
      path, messages, add_generation_prompt=True, tools=TOOLS
  )
  text = tokenizer.decode(ids)
  # tojson keeps non-ASCII, as transformers' filter does.
  assert "(× and ÷ too)" in text
  assert '"arguments": {"expression": "12 + 30"}' in text


@pytest.mark.parametrize("style", STYLES)
def test_chat_template_jinja_file_wins_over_the_config(tmp_path, style):
  path = chat_util.write_dir(tmp_path, style, jinja_file=True)
  config = json.loads((path / "tokenizer_config.json").read_text())
  config["chat_template"] = "{{ 'ignored' }}"
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  tokenizer = models.HFTokenizer.from_directory(path)
  ids = models.encode_chat(tokenizer, WITH_TOOL, add_generation_prompt=True)
  assert ids == _reference(path, WITH_TOOL, add_generation_prompt=True)


def test_named_templates_pick_default_or_tool_use(tmp_path):
  path = chat_util.write_dir(tmp_path, "llama3")
  config = json.loads((path / "tokenizer_config.json").read_text())
  config["chat_template"] = [
      {"name": "default", "template": chat_util.LLAMA3_TEMPLATE},
      {"name": "tool_use", "template": "{{ tools | length }} tools"},
  ]
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  template = models.HFTokenizer.from_directory(path).chat_template
  assert template.render(SYSTEM_USER).startswith("<|begin_of_text|>")
  assert template.render(SYSTEM_USER, tools=TOOLS) == "1 tools"
  config["chat_template"] = [{"template": "no name"}]
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(errors.UserError, match="neither a string nor a list"):
    models.HFTokenizer.from_directory(path)


def test_helpers_and_raise_exception():
  template = chat_lib.ChatTemplate(
      "{% if messages[0].role != 'user' %}"
      "{{ raise_exception('Conversations must start with user') }}"
      "{% endif %}{{ strftime_now('%Y') }}|{{ bos_token }}"
      "{% generation %}{{ messages[0].content }}{% endgeneration %}",
      {"bos_token": "<s>"},
  )
  text = template.render([{"role": "user", "content": "hi"}])
  year, rest = text.split("|")
  assert len(year) == 4 and year.isdigit() and rest == "<s>hi"
  with pytest.raises(
      errors.UserError, match="chat template: Conversations must start"
  ):
    template.render(SYSTEM_USER)
  with pytest.raises(errors.UserError, match="non-empty list of messages"):
    template.render([])
  with pytest.raises(errors.UserError, match="message 0 is not a dict"):
    template.render([{"content": "no role"}])
  with pytest.raises(errors.UserError, match="message 0 is not JSON data"):
    template.render([{"role": "user", "content": object()}])
  with pytest.raises(errors.UserError, match="tool 0 is a str, not a JSON"):
    template.render(SYSTEM_USER, tools=["calculator"])


def test_the_template_runs_in_a_sandbox():
  template = chat_lib.ChatTemplate(
      "{{ messages.__class__.__mro__ }}", {"bos_token": "<s>"}
  )
  with pytest.raises(errors.UserError, match="chat template"):
    template.render(SYSTEM_USER)


def test_a_directory_without_a_template_gives_one_line(tmp_path):
  path = chat_util.write_dir(tmp_path, "qwen")
  config = json.loads((path / "tokenizer_config.json").read_text())
  del config["chat_template"]
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  tokenizer = models.HFTokenizer.from_directory(path)
  assert tokenizer.chat_template is None
  with pytest.raises(errors.UserError) as e:
    models.encode_chat(tokenizer, SYSTEM_USER)
  assert "\n" not in str(e.value)
  assert "no chat template" in str(e.value)
  assert "chat_template.jinja" in str(e.value)


def test_save_keeps_the_template(tmp_path):
  path = chat_util.write_dir(tmp_path / "src", "qwen")
  tokenizer = models.HFTokenizer.from_directory(path)
  tokenizer.save(tmp_path / "copy")
  again = models.HFTokenizer.from_directory(tmp_path / "copy")
  ids = models.encode_chat(again, WITH_TOOL, add_generation_prompt=True)
  assert ids == _reference(path, WITH_TOOL, add_generation_prompt=True)
  assert ids == _reference(
      tmp_path / "copy", WITH_TOOL, add_generation_prompt=True
  )
  record = chat_lib.ChatTemplate.from_dict(
      json.loads(json.dumps(again.chat_template.to_dict()))
  )
  assert record.render(WITH_TOOL) == again.chat_template.render(WITH_TOOL)
