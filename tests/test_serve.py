"""`keras-lm serve`: the real `openai` client and `httpx` against the server in a subprocess
on a free port (a tiny model). Greedy answers equal `lm.chat` / `lm.generate` in this
process."""

import json
import os
import signal
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


def start_server(*extra):
    """`(process, base URL)` of `keras-lm serve` on the tiny preset, once it answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_lm.cli", "serve", "--preset", PRESET, "--port", str(port),
         "--api-key", KEY, "--model-name", "tiny-qwen", *extra],
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
    return process, base


@pytest.fixture(scope="module")
def server():
    process, base = start_server("--max-tokens-limit", "64")
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
                                              temperature=0, max_tokens=12, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(streamed)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == \
        reply.usage.total_tokens
    chunks = chunks[:-1]
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
    (dict(response_format={"type": "xml"}), 400, "response_format"),
    (dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "objectx"}}}), 400, "schema"),
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


def greedy_completion(lm, prompt: str, max_tokens: int) -> str:
    """What /v1/completions answers at temperature 0, from `lm.generate` here."""
    ids = lm.preprocessor.prompt_rows([prompt])[0]
    out = lm.generate({"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), bool)},
                      max_new_tokens=max_tokens, stop_token_ids="auto")
    new = np.asarray(out["token_ids"])[0][len(ids):][np.asarray(out["padding_mask"])[0][
        len(ids):]]
    stops = set(lm.preprocessor.tokenizer.generation_stop_ids())
    return lm.preprocessor.tokenizer.detokenize([int(i) for i in new if int(i) not in stops])


def test_n_choices_and_log_probs(client, lm):
    three = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES, n=3,
                                           temperature=0, max_tokens=8)
    expected = lm.chat(MESSAGES, max_new_tokens=8)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert all(c.message.content == expected for c in three.choices)
    assert three.usage.completion_tokens == sum(
        len(lm.preprocessor.tokenizer.tokenize(expected)) + (c.finish_reason == "stop")
        for c in three.choices) or three.usage.completion_tokens >= 3
    sampled = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES, n=4,
                                             temperature=1.0, seed=7, max_tokens=16)
    assert len({c.message.content for c in sampled.choices}) > 1  # each choice draws anew
    again = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES, n=4,
                                           temperature=1.0, seed=7, max_tokens=16)
    assert [c.message.content for c in again.choices] == [
        c.message.content for c in sampled.choices]  # seeded: reproducible
    scored = client.chat.completions.create(model="tiny-qwen", messages=MESSAGES,
                                            temperature=0, max_tokens=6, logprobs=True,
                                            top_logprobs=2)
    content = scored.choices[0].logprobs.content
    assert "".join(e.token for e in content) == scored.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the best
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    legacy = client.completions.create(model="tiny-qwen", prompt="the quick", temperature=0,
                                       max_tokens=5, logprobs=2)
    logprobs = legacy.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == legacy.choices[0].text
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)


def test_32_concurrent_streams_with_disconnects(server, lm):
    """Mixed prompts and lengths stream at once through the 8 slots; every fifth client hangs
    up after its first piece, some send a bad request first. Every other answer equals its
    own greedy generation."""
    import asyncio

    words = ["the quick brown fox", "a lazy dog", "hello", "once upon a time there was",
             "jumps over", "brown", "the the the", "fox and dog"]
    cases = [(words[i % len(words)], 4 + (i * 7) % 37) for i in range(32)]
    expected = {case: greedy_completion(lm, *case) for case in set(cases)}
    headers = {"Authorization": f"Bearer {KEY}"}

    async def one(http, index, prompt, max_tokens):
        body = {"model": "tiny-qwen", "prompt": prompt, "max_tokens": max_tokens,
                "temperature": 0, "stream": True}
        if index % 7 == 3:  # a bad request among the good ones
            bad = await http.post(f"{server}/v1/completions", headers=headers,
                                  json=dict(body, temperature=0.5, top_k=10 ** 4))
            assert bad.status_code == 400 and "top_k" in bad.json()["error"]["message"]
        pieces, finish = [], None
        async with http.stream("POST", f"{server}/v1/completions", json=body,
                               headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"][0]
                pieces.append(choice["text"])
                finish = choice["finish_reason"] or finish
                if index % 5 == 0 and pieces:
                    return None  # hang up mid-answer
        return "".join(pieces), finish

    async def everyone():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(one(http, i, *case) for i, case in enumerate(cases)))

    results = asyncio.run(everyone())
    for index, (case, result) in enumerate(zip(cases, results, strict=True)):
        if index % 5:
            text, finish = result
            assert text == expected[case], (index, case)
            assert finish in ("stop", "length")
    deadline = time.monotonic() + 30  # the hung-up requests leave at their next chunk
    while httpx.get(f"{server}/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{server}/health").json()["running"] == 0
    after = httpx.post(f"{server}/v1/completions", headers=headers, json={
        "model": "tiny-qwen", "prompt": "hello", "max_tokens": 5, "temperature": 0})
    assert after.json()["choices"][0]["text"] == greedy_completion(lm, "hello", 5)


def test_full_queue_429_and_graceful_shutdown(lm):
    """One slot, one waiting place: a burst gets 429s; on SIGTERM the running stream still
    ends properly and the process exits cleanly."""
    import concurrent.futures

    process, base = start_server("--max-batch", "1", "--max-queue", "1")
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        def ask(_):
            return httpx.post(f"{base}/v1/completions", headers=headers, timeout=120, json={
                "model": "tiny-qwen", "prompt": "the quick", "max_tokens": 40,
                "temperature": 0}).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(ask, range(12)))
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        body = {"model": "tiny-qwen", "prompt": "the quick", "max_tokens": 60,
                "temperature": 0, "stream": True}
        lines = []
        with httpx.stream("POST", f"{base}/v1/completions", json=body, headers=headers,
                          timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and not lines:
                    process.terminate()  # SIGTERM while the answer is being written
                lines.append(line)
        # uvicorn re-raises the signal once it has shut down cleanly (-15, not a crash).
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.stdout.read()
        data = [line for line in lines if line.startswith("data: ")]
        assert data[-1] == "data: [DONE]"
        text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in data[:-1])
        assert text == greedy_completion(lm, "the quick", 60)
    finally:
        if process.poll() is None:
            process.kill()


PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "ok"],
          "properties": {"name": {"type": "string", "maxLength": 8},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "ok": {"type": "boolean"}}}


def test_structured_output_always_validates(client):
    jsonschema = pytest.importorskip("jsonschema")
    reply = client.chat.completions.create(
        model="tiny-qwen", messages=MESSAGES, temperature=1.0, seed=1, max_tokens=64, n=4,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON}})
    for choice in reply.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    streamed = client.chat.completions.create(
        model="tiny-qwen", messages=MESSAGES, temperature=0, max_tokens=64, stream=True,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON}})
    text = "".join(c.choices[0].delta.content or "" for c in streamed)
    jsonschema.validate(json.loads(text), PERSON)
    anything = client.chat.completions.create(
        model="tiny-qwen", messages=MESSAGES, temperature=0, max_tokens=64,
        response_format={"type": "json_object"})
    content = anything.choices[0].message.content
    assert content.startswith("{")
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
