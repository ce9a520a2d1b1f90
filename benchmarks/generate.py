"""Generation speed: keras_lm vs keras-hub vs transformers on the same random model shape
(GPT-2 124M, a Llama-style 110M with `--model llama`, or Gemma 3 270M with `--model gemma3`).

Each system runs in its own process (same thread settings), greedy, fp32, random weights.
Run: python benchmarks/generate.py [--threads 1] [--new-tokens 64] [--batches 1 8]
Prints one table: first-call seconds, warm tokens/s per batch size, peak RSS, ratios.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Random-weight shapes; the same numbers go to every library.
SHAPES = {
    "gpt2": dict(vocab=50257, layers=12, heads=12, kv_heads=12, hidden=768, inner=3072),
    "llama": dict(vocab=32000, layers=12, heads=12, kv_heads=12, hidden=768, inner=2048),
    # google/gemma-3-270m: 4 query heads of 256, 1 KV head, 5 local (window 512) : 1 global.
    "gemma3": dict(vocab=262144, layers=18, heads=4, kv_heads=1, hidden=640, inner=2048,
                   head_dim=256, window=512),
}


def prompt_ids(batch, length, vocab, seed=0):
    import numpy as np

    return np.random.default_rng(seed).integers(1, vocab, size=(batch, length)).astype("int32")


def build_keras_lm(model, s):
    import keras_lm

    if model == "gpt2":
        backbone = keras_lm.models.GPT2Backbone(
            s["vocab"], s["layers"], s["heads"], s["hidden"], s["inner"],
            max_sequence_length=1024)
        return keras_lm.models.GPT2CausalLM(backbone=backbone)
    if model == "gemma3":
        backbone = keras_lm.models.Gemma3Backbone(**_keras_gemma3_args(s))
        return keras_lm.models.Gemma3CausalLM(backbone=backbone)
    backbone = keras_lm.models.LlamaBackbone(
        s["vocab"], s["layers"], s["heads"], s["hidden"], s["inner"], s["kv_heads"],
        tie_word_embeddings=True)
    return keras_lm.models.LlamaCausalLM(backbone=backbone)


def _keras_gemma3_args(s):
    return dict(vocabulary_size=s["vocab"], num_layers=s["layers"], num_query_heads=s["heads"],
                num_key_value_heads=s["kv_heads"], hidden_dim=s["hidden"],
                intermediate_dim=s["inner"], head_dim=s["head_dim"], use_post_ffw_norm=True,
                use_post_attention_norm=True, use_sliding_window_attention=True,
                sliding_window_size=s["window"], image_size=896, vision_encoder=None)


def build_keras_hub(model, s):
    import keras_hub

    if model == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(
            s["vocab"], s["layers"], s["heads"], s["hidden"], s["inner"],
            max_sequence_length=1024)
        return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    if model == "gemma3":
        backbone = keras_hub.models.Gemma3Backbone(**_keras_gemma3_args(s))
        return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=s["vocab"], num_layers=s["layers"], num_query_heads=s["heads"],
        hidden_dim=s["hidden"], intermediate_dim=s["inner"], num_key_value_heads=s["kv_heads"],
        tie_word_embeddings=True)
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def build_transformers(model, s):
    import transformers

    if model == "gpt2":
        config = transformers.GPT2Config(vocab_size=s["vocab"], n_layer=s["layers"],
                                         n_head=s["heads"], n_embd=s["hidden"],
                                         n_inner=s["inner"], n_positions=1024)
        return transformers.GPT2LMHeadModel(config).eval()
    if model == "gemma3":
        config = transformers.Gemma3TextConfig(
            vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inner"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
            num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
            query_pre_attn_scalar=s["head_dim"], sliding_window=s["window"])
        return transformers.Gemma3ForCausalLM(config).eval()
    config = transformers.LlamaConfig(
        vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inner"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"], tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config).eval()


def quantize_keras(lm):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm.quantize("int8")


def run_keras_lm(model, batch, prompt_len, new_tokens, repeats, quantize=False):
    import numpy as np

    s = SHAPES[model]
    lm = build_keras_lm(model, s)
    if quantize:
        quantize_keras(lm)
    lm.compile(sampler="greedy")
    ids = prompt_ids(batch, prompt_len, s["vocab"])
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    return _time(lambda: lm.generate(x, max_new_tokens=new_tokens, stop_token_ids=None),
                 repeats)


def run_keras_hub(model, batch, prompt_len, new_tokens, repeats, quantize=False):
    import numpy as np

    s = SHAPES[model]
    lm = build_keras_hub(model, s)
    if quantize:
        quantize_keras(lm)
    lm.compile(sampler="greedy")
    total = prompt_len + new_tokens
    ids = np.zeros((batch, total), "int32")
    ids[:, :prompt_len] = prompt_ids(batch, prompt_len, s["vocab"])
    mask = np.zeros((batch, total), bool)
    mask[:, :prompt_len] = True
    x = {"token_ids": ids, "padding_mask": mask}
    # keras-hub 0.32's text-only Gemma 3 returns `images: None`, which its own `generate`
    # cannot concatenate; its compiled generate function is what we time anyway.
    lm.make_generate_function()
    return _time(lambda: np.asarray(lm.generate_function(x, None)["token_ids"]), repeats)


def run_transformers(model, batch, prompt_len, new_tokens, repeats, compiled=False,
                     quantize=False):
    import torch

    s = SHAPES[model]
    reference = build_transformers(model, s)
    if quantize:  # PyTorch's dynamic int8 (FBGEMM) on every nn.Linear
        reference = torch.ao.quantization.quantize_dynamic(
            reference, {torch.nn.Linear}, dtype=torch.qint8)
    if compiled:  # transformers' fastest documented setup: static cache + torch.compile
        reference.generation_config.cache_implementation = "static"
        reference.forward = torch.compile(reference.forward)
    ids = torch.tensor(prompt_ids(batch, prompt_len, s["vocab"]), dtype=torch.long)

    def call():
        with torch.no_grad():
            reference.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                               do_sample=False, pad_token_id=0)

    return _time(call, repeats)


def _time(fn, repeats):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return first, times[len(times) // 2]


def run_transformers_compiled(model, batch, prompt_len, new_tokens, repeats, quantize=False):
    if quantize:
        raise SystemExit("transformers_compiled has no int8 setup here")
    return run_transformers(model, batch, prompt_len, new_tokens, repeats, compiled=True)


RUNNERS = {"keras_lm": run_keras_lm, "keras_hub": run_keras_hub,
           "transformers": run_transformers, "transformers_compiled": run_transformers_compiled}


def child(args):
    if args.system == "bandwidth":
        print(json.dumps(measure_bandwidth(args.model)))
        return
    first, warm = RUNNERS[args.system](args.model, args.batch, args.prompt, args.new_tokens,
                                       args.repeats, quantize=args.int8)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first_s": first, "warm_s": warm, "rss_mb": rss_mb}))


def weight_bytes(model):
    """fp32 bytes read per decoded token: every weight once (the embedding once, as the head)."""
    s = SHAPES[model]
    h, kv = s.get("head_dim", s["hidden"] // s["heads"]), s["kv_heads"]
    attention = s["hidden"] * h * (2 * s["heads"] + 2 * kv)
    mlp = s["hidden"] * s["inner"] * (2 if model == "gpt2" else 3)
    return 4 * (s["vocab"] * s["hidden"] + s["layers"] * (attention + mlp))


def measure_bandwidth(model):
    """Best read bandwidth (GB/s) over a 1 GB fp32 matrix (a reduction, MKL's GEMV and an
    8-block batched GEMV), and the tokens/s it allows at batch 1 when every weight is read
    once per token."""
    import torch

    matrix = torch.randn(32768, 8192)
    row = torch.randn(1, 8192)
    kernels = [
        lambda: matrix.sum(),
        lambda: matrix @ row.T,
        # row.T has strides (1, 8192): MKL's fast path (a (1, 1)-strided column is slow).
        lambda: torch.bmm(matrix.view(8, 4096, 8192), row.T.expand(8, 8192, 1)),
    ]
    best = 0.0
    for kernel in kernels:
        for _ in range(2):
            kernel()
        for _ in range(5):
            start = time.perf_counter()
            kernel()
            best = max(best, matrix.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return {"gbps": best, "limit_tps": best * 1e9 / weight_bytes(model)}


SYSTEMS = [("keras_lm", "jax"), ("keras_lm", "torch"), ("keras_hub", "jax"),
           ("keras_hub", "torch"), ("transformers", "torch"), ("transformers_compiled", "torch")]


def available(python, system):
    system = system.replace("_compiled", "")
    probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({system!r}) is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def run_child(args, system, backend, batch, python=sys.executable):
    """Run one measurement in a fresh process under the requested thread/CPU settings."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={args.threads > 1} "
                   f"intra_op_parallelism_threads={args.threads}")
    cmd = [python, __file__, "--system", system, "--batch", str(batch), "--model", args.model,
           "--prompt", str(args.prompt), "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats)] + (["--int8"] if args.int8 else [])
    if args.cpus is not None:
        cmd = ["taskset", "-c", args.cpus] + cmd
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{system}/{backend} b{batch} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SHAPES), default="gpt2")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", default=None,
                        help="Pin every system to these CPUs with taskset, e.g. 0.")
    parser.add_argument("--keras-hub-python", default=sys.executable,
                        help="Python with keras-hub installed (it pulls tensorflow-text, so a "
                             "separate virtualenv is handy).")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="Systems to leave out, e.g. transformers_compiled (slow to compile).")
    parser.add_argument("--int8", action="store_true",
                        help="Quantize to int8: quantize('int8') for keras_lm / keras_hub, "
                             "torch dynamic int8 for transformers.")
    parser.add_argument("--system")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.system:
        return child(args)
    rows = []
    for system, backend in SYSTEMS:
        if system in args.skip:
            continue
        python = args.keras_hub_python if system == "keras_hub" else sys.executable
        if not available(python, system):
            print(f"{system} is not installed for {python}; skipped.", file=sys.stderr)
            continue
        for batch in args.batches:
            result = run_child(args, system, backend, batch, python)
            if result is None:
                continue
            tps = batch * args.new_tokens / result["warm_s"]
            rows.append((system, backend, batch, result["first_s"], tps, result["rss_mb"]))
    ours = {(b, k): t for s, k, b, _, t, _ in rows if s == "keras_lm"}
    weights = "int8" if args.int8 else "fp32"
    print(f"{args.model} shape {SHAPES[args.model]}, {weights} random weights, "
          f"prompt {args.prompt}, {args.new_tokens} new tokens, greedy, "
          f"threads={args.threads or 'default'}, cpus={args.cpus or 'all'}")
    limit = run_child(args, "bandwidth", "torch", 1)
    if limit:
        print(f"bandwidth limit: {limit['gbps']:.1f} GB/s read → "
              f"{limit['limit_tps']:.1f} tok/s at batch 1 "
              f"({weight_bytes(args.model) / 1e6:.0f} MB of fp32 weights per token)")
    print(f"{'system':14s} {'backend':8s} {'batch':>5s} {'first s':>8s} {'tok/s':>8s} "
          f"{'RSS MB':>8s} {'ours(jax)/this':>15s}")
    for system, backend, batch, first, tps, rss in rows:
        ratio = ours.get((batch, "jax"), float("nan")) / tps
        print(f"{system:14s} {backend:8s} {batch:5d} {first:8.2f} {tps:8.1f} {rss:8.0f} "
              f"{ratio:15.2f}")


if __name__ == "__main__":
    main()
