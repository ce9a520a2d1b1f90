"""Chat templates (rendered like `transformers`' `apply_chat_template`, sandboxed and bounded)
and `CausalLM.chat`. The templates in tests/data/chat_templates are the formats of Gemma 3,
Llama 3.2, Qwen 2.5 and Mistral instruct checkpoints, kept as data."""

import datetime
import json
import os
import shutil

import numpy as np
import pytest

import keras_lm
from keras_lm.chat.template import ChatTemplateError, render_chat_template

TEMPLATES = os.path.join(os.path.dirname(__file__), "data", "chat_templates")
FIXTURES = os.path.join(os.path.dirname(__file__), "data", "keras_hub")
SPECIAL = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
           "pad_token": "<pad>"}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city, «today».",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "  Hello there! "}],
    "system": [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Name a colour."}],
    "multi-turn": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello. How can I help?"},
                   {"role": "user", "content": "Tell me a joke, ünïcode ✓."}],
}
TOOL_CALL = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21}"},
]


def template(name):
    with open(os.path.join(TEMPLATES, f"{name}.jinja"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def reference_tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL)


def expected(reference, source, messages, **kwargs):
    return reference.apply_chat_template(messages, chat_template=source, tokenize=False,
                                         **kwargs)


@pytest.mark.parametrize("name", ["gemma3", "llama3_2", "qwen2_5", "mistral"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_templates_render_like_transformers(reference_tokenizer, name, conversation,
                                            generation_prompt):
    messages = CONVERSATIONS[conversation]
    source = template(name)
    options = dict(add_generation_prompt=generation_prompt)
    if name == "llama3_2":
        options["date_string"] = "01 Dec 2026"
    try:
        want = expected(reference_tokenizer, source, messages, **options)
    except Exception as error:  # the template itself refuses (Mistral has no system role)
        with pytest.raises(ChatTemplateError, match=str(error).split("\n")[0][:40]):
            render_chat_template(source, messages, **options, **SPECIAL)
        return
    assert render_chat_template(source, messages, **options, **SPECIAL) == want


@pytest.mark.parametrize("name", ["llama3_2", "qwen2_5"])
def test_tool_templates_render_like_transformers(reference_tokenizer, name):
    source = template(name)
    for messages in (TOOL_CALL[:1], TOOL_CALL):
        want = expected(reference_tokenizer, source, messages, tools=TOOLS,
                        add_generation_prompt=True)
        got = render_chat_template(source, messages, tools=TOOLS, add_generation_prompt=True,
                                   **SPECIAL)
        assert got == want
        assert "get_weather" in got and "«today»" in got  # tojson keeps non-ASCII


def test_strftime_now_is_todays_date():
    got = render_chat_template(template("llama3_2"), CONVERSATIONS["one turn"], **SPECIAL)
    assert "Today Date: " + datetime.datetime.now().strftime("%d %b %Y") in got


@pytest.mark.parametrize("source, words", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i %}{% endfor %}"
     "{% endfor %}", "did not finish"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "more than"),
    ("{{ messages.__class__.__mro__ }}", "sandbox forbids"),
    ("{{ messages.append(1) }}", "sandbox forbids"),
    ("{{ raise_exception('no system role here') }}", "no system role here"),
    ("{% for m in messages %}{{ m.content }", "syntax error on line 1"),
    ("{{ messages[5].content }}", "refused|failed"),
])
def test_bad_templates_are_clear_errors_not_hangs(source, words):
    import time

    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=words):
        render_chat_template(source, CONVERSATIONS["one turn"], time_limit=1.0)
    assert time.monotonic() - start < 10


def test_bad_messages_are_named():
    with pytest.raises(ValueError, match="messages"):
        render_chat_template("{{ messages }}", [])
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        render_chat_template("{{ messages }}", [{"role": "user", "content": "a"}, "b"])


def _lm(name):
    lm = keras_lm.models.CausalLM.from_preset(os.path.join(FIXTURES, name))
    lm.compile(sampler="greedy")
    return lm


def test_builtin_templates_and_prompt_ids():
    gemma = _lm("gemma3")
    messages = CONVERSATIONS["system"]
    text = gemma.preprocessor.apply_chat_template(messages)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nName a colour.<end_of_turn>\n"
                    "<start_of_turn>model\n")
    ids = gemma.preprocessor.chat_prompt_ids(messages).tolist()
    tokenizer = gemma.preprocessor.tokenizer
    assert ids[0] == tokenizer.start_token_id and ids.count(tokenizer.start_token_id) == 1
    assert ids.count(tokenizer.token_to_id("<start_of_turn>")) == 2
    qwen = _lm("qwen")
    ids = qwen.preprocessor.chat_prompt_ids(messages).tolist()
    vocabulary = qwen.preprocessor.tokenizer.vocabulary
    assert ids[0] == vocabulary["<|im_start|>"]
    assert ids.count(vocabulary["<|im_end|>"]) == 2
    gpt2 = _lm("gpt2")
    with pytest.raises(ValueError, match="no chat template"):
        gpt2.preprocessor.apply_chat_template(messages)


def test_chat_stops_at_the_end_of_the_turn():
    lm = _lm("qwen")
    end = lm.preprocessor.tokenizer.vocabulary["<|im_end|>"]
    messages = CONVERSATIONS["one turn"]
    assert lm.chat(messages, logit_bias={end: 100.0}) == ""
    pieces = list(lm.chat(messages, logit_bias={end: 100.0}, stream=True))
    assert "".join(pieces) == ""
    # Without the bias: the reply is what generate continues the prompt ids with.
    ids = lm.preprocessor.chat_prompt_ids(messages)
    reply = lm.chat(messages, max_new_tokens=5)
    out = lm.generate({"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), bool)},
                      max_new_tokens=5)
    new = np.asarray(out["token_ids"])[0][len(ids):]
    new = [int(i) for i in new[np.asarray(out["padding_mask"])[0][len(ids):]]]
    new = new[:-1] if new and new[-1] in lm.preprocessor.tokenizer.generation_stop_ids() else new
    assert reply == lm.preprocessor.tokenizer.detokenize(new)
    with pytest.raises(TypeError, match="max_length"):
        lm.chat(messages, max_length=10)


def test_checkpoint_templates_load_and_survive_save(tmp_path):
    lm = _lm("qwen")
    folder = tmp_path / "hf"
    lm.export_to_transformers(str(folder))  # writes the family template into tokenizer_config
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = template("qwen2_5")
    config_path.write_text(json.dumps(config))
    loaded = keras_lm.models.CausalLM.from_preset(str(folder))
    assert loaded.preprocessor.tokenizer.chat_template == template("qwen2_5")
    text = loaded.preprocessor.apply_chat_template(CONVERSATIONS["one turn"])
    assert text.startswith("<|im_start|>system\nYou are Qwen")
    loaded.save_to_preset(str(tmp_path / "preset"))
    assert (tmp_path / "preset" / "assets" / "tokenizer" / "chat_template.jinja").is_file()
    again = keras_lm.models.CausalLM.from_preset(str(tmp_path / "preset"))
    assert again.preprocessor.apply_chat_template(CONVERSATIONS["one turn"]) == text
    shutil.copy(os.path.join(TEMPLATES, "gemma3.jinja"), folder / "chat_template.jinja")
    assert keras_lm.models.CausalLM.from_preset(str(folder)).preprocessor.tokenizer \
        .chat_template == template("gemma3")  # chat_template.jinja wins, as in transformers
