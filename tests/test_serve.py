"""`keras-lm serve`: the real `openai` client and `httpx` against the server in a subprocess
on a free port (a tiny model). Greedy answers equal `lm.chat` / `lm.generate` in this
process."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_lm

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

PRESET = os.path.join(os.path.dirname(__file__), "data", "keras_hub", "qwen")
KEY = "test-key"
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "the quick brown fox"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_lm.cli", "serve", "--preset", PRESET, "--port", str(port),
         "--api-key", KEY, "--model-name", "tiny-qwen", "--max-tokens-limit", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {process.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the server did not start in 120 s")
    yield base
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def lm():
    model = keras_lm.models.CausalLM.from_preset(PRESET)
    model.compile(sampler="greedy")
    return model


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-qwen"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_chat_completion_equals_lm_chat(client, lm):
    reply = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES,
                                           temperature=0, max_tokens=12)
    expected = lm.chat(MESSAGES, max_new_tokens=12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected
    prompt_tokens = len(lm.preprocessor.chat_prompt_ids(MESSAGES))
    assert reply.usage.prompt_tokens == prompt_tokens
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 12
    streamed = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES,
                                              temperature=0, max_tokens=12, stream=True)
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == expected
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_completion_equals_generate_and_honours_stop(client, lm):
    prompt = "the quick brown"
    reply = client.completions.create(model="tiny-qwen", prompt=prompt, temperature=0,
                                      max_tokens=10)
    ids = lm.preprocessor.prompt_rows([prompt])[0]
    out = lm.generate({"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), bool)},
                      max_new_tokens=10)
    new = np.asarray(out["token_ids"])[0][len(ids):][np.asarray(out["padding_mask"])[0][
        len(ids):]]
    stops = set(lm.preprocessor.tokenizer.generation_stop_ids())
    new = [int(i) for i in new if int(i) not in stops]
    expected = lm.preprocessor.tokenizer.detokenize(new)
    assert reply.choices[0].text == expected
    assert reply.usage.prompt_tokens == len(ids)
    if len(expected) > 2:
        stop = expected[1:3]
        cut = client.completions.create(model="tiny-qwen", prompt=prompt, temperature=0,
                                        max_tokens=10, stop=[stop])
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].text == expected[:expected.index(stop) + len(stop)] or \
            cut.choices[0].text == expected[:expected.index(stop)]
    pieces = [c.choices[0].text for c in client.completions.create(
        model="tiny-qwen", prompt=prompt, temperature=0, max_tokens=10, stream=True)]
    assert "".join(pieces) == expected


def test_sampling_fields_are_accepted(client):
    reply = client.chat.completions.create(
        model="tiny-qwen", messages=MESSAGES, temperature=0.8, top_p=0.9, seed=3,
        presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"5": -100}, max_tokens=5,
        extra_body={"top_k": 20, "min_p": 0.05})
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("kwargs, status, words", [
    (dict(temperature=3.0), 400, "temperature"),
    (dict(max_tokens=1000), 400, "max_tokens"),
    (dict(n=17), 400, "n"),
    (dict(temperature=0.5, extra_body={"top_k": 1000}), 400, "top_k"),
    (dict(top_logprobs=3), 400, "logprobs"),
    (dict(model="gpt-4"), 404, "does not exist"),
    (dict(response_format={"type": "json_object"}), 400, "response_format"),
    (dict(logit_bias={"99999999": 1.0}), 400, "logit_bias"),
])
def test_errors_are_openai_shaped(client, kwargs, status, words):
    options = dict(model="tiny-qwen", messages=MESSAGES, max_tokens=4) | kwargs
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(**options)
    assert raised.value.status_code == status
    body = raised.value.response.json()
    assert words in body["error"]["message"] and body["error"]["type"]


def test_api_key_and_template_errors(server):
    bad = httpx.post(f"{server}/v1/chat/completions", json={
        "model": "tiny-qwen", "messages": MESSAGES})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    headers = {"Authorization": f"Bearer {KEY}"}
    empty = httpx.post(f"{server}/v1/chat/completions", headers=headers,
                       json={"model": "tiny-qwen", "messages": []})
    assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
    broken = httpx.post(f"{server}/v1/completions", headers=headers, content=b"{not json")
    assert broken.status_code == 400 and broken.json()["error"]["type"]
    stream = httpx.post(f"{server}/v1/chat/completions", headers=headers, json={
        "model": "tiny-qwen", "messages": MESSAGES, "stream": True, "max_tokens": 4,
        "temperature": 0})
    lines = [line for line in stream.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
