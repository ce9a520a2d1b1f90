"""OpenAI-compatible servers under load: output tokens/s and time to first token (p50 / p99) at
concurrency 1, 8 and 32, on the real default model (Gemma 3 270M), plus time to first token
of the next turn of a chat (the prompt cache at work).

Servers, each started in its own process on a free port and warmed up with a few requests:
`keras-lm serve` (jax fp32, jax int8, torch int8), llama.cpp's server from `llama-cpp-python`
(`pip install "llama-cpp-python[server]"`) and `transformers serve` (on the same weights as a
Hugging Face folder) when installed. Every client streams `/v1/completions` at temperature 0;
output tokens are counted with our tokenizer (the same one for every server).

Run: python benchmarks/serve.py [--new-tokens 48] [--skip transformers] [--only ours_jax_int8]
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_model import gguf_path, hf_folder  # noqa: E402

PROMPTS = [
    "The history of the printing press", "A recipe for bread begins with", "In the year 2050,",
    "The best way to learn a language is", "Once upon a time in a small village",
    "The main causes of the French Revolution were", "To train a neural network you",
    "My favourite season is autumn because", "The ocean covers most of the planet and",
    "A good night's sleep helps", "The old lighthouse keeper said", "Python is a language that",
    "Mountains form when", "The recipe calls for two eggs and", "The city at night is",
    "Scientists discovered that",
]
LEVELS = (1, 8, 32)
SYSTEM_PROMPT = ("You are a careful assistant. Answer in full sentences, mention sources when "
                 "you can, and keep a friendly tone. ") * 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(name: str, port: int):
    """`(command, environment)` that starts server `name` on `port`, or None if missing."""
    threads = str(os.cpu_count())
    env = dict(os.environ)
    if name.startswith("ours"):
        backend = name.split("_")[1]
        cmd = [sys.executable, "-m", "keras_lm.cli", "serve", "--port", str(port),
               "--model-name", "m", "--max-batch", "8"]
        if name.endswith("int8"):
            cmd += ["--quantize", "int8"]
        return cmd, dict(env, KERAS_BACKEND=backend)
    if name == "llama_cpp":
        if not _has("llama_cpp.server") or not _has("sse_starlette"):
            return None
        return [sys.executable, "-m", "llama_cpp.server", "--model", gguf_path(), "--port",
                str(port), "--n_threads", threads, "--n_ctx", "4096", "--model_alias", "m",
                "--verbose", "False", "--interrupt_requests", "False"], env
    if name == "transformers":
        import shutil

        if shutil.which("transformers") is None:
            return None
        return ["transformers", "serve", hf_folder(), "--port", str(port), "--device", "cpu",
                "--dtype", "float32"], env
    raise ValueError(name)


def _has(module: str) -> bool:
    probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def start(name: str):
    """`(process, base URL, model id, seconds to ready)`, or None."""
    import httpx

    port = free_port()
    made = server_command(name, port)
    if made is None:
        return None
    cmd, env = made
    began = time.perf_counter()
    log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block a chatty server
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    while time.perf_counter() - began < 600:
        if process.poll() is not None:
            log.seek(0)
            print(f"{name}: exited\n{log.read()[-2000:]}", file=sys.stderr)
            return None
        try:
            models = httpx.get(f"{base}/v1/models", timeout=2).json()["data"]
            return process, base, models[0]["id"], time.perf_counter() - began
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            time.sleep(0.5)
    process.kill()
    print(f"{name}: did not answer in 600 s", file=sys.stderr)
    return None


async def one_request(http, base, model, prompt, new_tokens):
    """(seconds to first text, seconds to the end, text) of one streamed completion."""
    import json

    body = {"model": model, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
            "stream": True}
    began = time.perf_counter()
    first, pieces = None, []
    async with http.stream("POST", f"{base}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            text = choices[0].get("text") or ""
            if text and first is None:
                first = time.perf_counter() - began
            pieces.append(text)
    return first or (time.perf_counter() - began), time.perf_counter() - began, "".join(pieces)


async def level(base, model, concurrency, requests, new_tokens, count_tokens):
    import httpx

    queue = list(range(requests))
    results = []

    async def client(http):
        while queue:
            i = queue.pop(0)
            results.append(await one_request(http, base, model, PROMPTS[i % len(PROMPTS)],
                                             new_tokens))

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=900) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - began
    tokens = sum(count_tokens(text) for _, _, text in results)
    firsts = sorted(first for first, _, _ in results)
    return {"tok_s": tokens / wall, "ttft_p50": statistics.median(firsts),
            "ttft_p99": firsts[min(len(firsts) - 1, int(0.99 * len(firsts)))],
            "tokens": tokens, "wall": wall}


async def next_turn(base, model, new_tokens, topic):
    """Time to first token of a chat's second turn (the long system prompt and the first turn
    again, then a new question), and of a fresh prompt of the same length."""
    import httpx

    first_turn = f"{SYSTEM_PROMPT}\nUser: Tell me about {topic}.\nAssistant:"
    async with httpx.AsyncClient(timeout=900) as http:
        _, _, reply = await one_request(http, base, model, first_turn, new_tokens)
        second = f"{first_turn}{reply}\nUser: And how is it made?\nAssistant:"
        ttft, _, _ = await one_request(http, base, model, second, 4)
        fresh = f"{SYSTEM_PROMPT[::-1]}\nUser: {topic}?\nAssistant:{reply} How is it made?"
        cold, _, _ = await one_request(http, base, model, fresh, 4)
    return ttft, cold


def measure(name, args, count_tokens):
    started = start(name)
    if started is None:
        return None
    process, base, model, ready = started
    try:
        return _measure(base, model, ready, args, count_tokens)
    except Exception as error:  # one server failing must not lose the others' rows
        print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _measure(base, model, ready, args, count_tokens):
    # The whole workload once untimed first (compilation, caches), then timed.
    row = {"ready_s": ready}
    for timed in (False, True):
        for concurrency in LEVELS:
            requests = {1: 4, 8: 16, 32: 32}[concurrency]
            result = asyncio.run(level(base, model, concurrency, requests, args.new_tokens,
                                       count_tokens))
            if timed:
                row[concurrency] = result
        if not timed:
            asyncio.run(next_turn(base, model, args.new_tokens, "cheese"))
    row["turn2_ttft"], row["cold_ttft"] = asyncio.run(next_turn(base, model, args.new_tokens,
                                                                "bread"))
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    import keras_lm

    tokenizer = keras_lm.models.CausalLM.from_preset(gguf_path()).preprocessor.tokenizer

    def count_tokens(text):
        return len(tokenizer.tokenize(text)) if text else 0

    names = ["ours_jax_fp32", "ours_jax_int8", "ours_torch_int8", "llama_cpp", "transformers"]
    names = [n for n in names if n not in args.skip and (args.only is None or n in args.only)]
    if "transformers" in names:
        hf_folder()
    load_before = os.getloadavg()
    rows = {}
    for name in names:
        row = measure(name, args, count_tokens)
        if row is not None:
            rows[name] = row
            print(f"{name}: {json.dumps(row)}", file=sys.stderr)
    load_after = os.getloadavg()
    print(f"Gemma 3 270M (Q4_K_M GGUF); /v1/completions streamed, {args.new_tokens} new tokens, "
          f"greedy; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after "
          f"{load_after[0]:.2f}")
    print("| server | tok/s c1 | tok/s c8 | tok/s c32 | TTFT p50/p99 c1 s | TTFT p50/p99 c8 s "
          "| TTFT p50/p99 c32 s | next chat turn TTFT s (fresh prompt) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [f"{r[c]['tok_s']:.1f}" for c in LEVELS]
        cells += [f"{r[c]['ttft_p50']:.2f} / {r[c]['ttft_p99']:.2f}" for c in LEVELS]
        cells.append(f"{r['turn2_ttft']:.2f} ({r['cold_ttft']:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in rows.items():
        if name.startswith("ours"):
            peers = {p: q[8]["tok_s"] for p, q in rows.items() if not p.startswith("ours")}
            ratios = ", ".join(f"{r[8]['tok_s'] / v:.2f}x {p}" for p, v in peers.items())
            print(f"{name}: c8 / own c1 {r[8]['tok_s'] / r[1]['tok_s']:.2f}x; c8 vs peers "
                  f"{ratios or '-'}")


if __name__ == "__main__":
    main()
