"""Fine-tuning speed and memory: keras_lm (JAX, torch) vs `transformers` (eager and
`torch.compile`) on the same random model shape, AdamW, one batch of `--batch` x `--length`
tokens per step. Full fine-tuning and LoRA (rank 8 on query and value; `peft` for
transformers), fp32 or mixed bfloat16.

Each run is its own process (same threads): first step seconds (compiling included), warm
tokens/s over the next steps, and peak RSS (VmHWM). Prints a table and the ratios to
transformers eager measured in the same run, with the load average of the machine.
Run: python benchmarks/fit.py [--model gpt2|gemma3] [--steps 6] [--modes full lora]
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import SHAPES, build_keras_lm, build_transformers  # noqa: E402

SYSTEMS = ("keras_lm/jax", "keras_lm/torch", "transformers", "transformers_compiled")


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def _batch(args, vocab):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, vocab, size=(args.batch, args.length + 1)).astype("int32")


def run_keras_lm(args, shape):
    import keras
    import numpy as np

    if args.precision == "bf16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    lm = build_keras_lm(args.model, shape)
    if args.mode == "lora":
        lm.backbone.enable_lora(8)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-4),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               weighted_metrics=[])
    ids = _batch(args, shape["vocab"])
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    y = ids[:, 1:]

    def step():
        return float(lm.train_on_batch(x, y))

    return _timed(step, args)


def run_transformers(args, shape, compiled=False):
    import torch

    model = build_transformers(args.model, shape).train()
    if args.mode == "lora":
        import peft

        targets = ["c_attn"] if args.model == "gpt2" else ["q_proj", "v_proj"]
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=8,
                                                           target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.tensor(_batch(args, shape["vocab"]), dtype=torch.long)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = forward(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return _timed(step, args)


def _timed(step, args):
    began = time.perf_counter()
    first_loss = step()
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    seconds = time.perf_counter() - began
    return dict(first_step_s=first, tokens_per_s=args.steps * args.batch * args.length / seconds,
                peak_rss_gb=_peak_rss_gb(), first_loss=first_loss, last_loss=loss)


def child(args):
    shape = SHAPES[args.model]
    if args.system.startswith("keras_lm"):
        result = run_keras_lm(args, shape)
    else:
        result = run_transformers(args, shape, compiled=args.system.endswith("compiled"))
    print(json.dumps(result))


def run_child(args, system, mode, precision):
    backend = system.split("/")[1] if "/" in system else "torch"
    env = dict(os.environ, KERAS_BACKEND=backend)
    cmd = [sys.executable, __file__, "--system", system, "--model", args.model, "--mode", mode,
           "--precision", precision, "--steps", str(args.steps), "--batch", str(args.batch),
           "--length", str(args.length)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{system} {mode} {precision} failed:\n{out.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("gpt2", "gemma3"), default="gpt2")
    parser.add_argument("--system", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    if args.system:
        return child(args)
    load = os.getloadavg()[0]
    print(f"{args.model}, batch {args.batch} x {args.length}, AdamW, {args.steps} warm steps, "
          f"{os.cpu_count()} CPUs, load average {load:.2f} before")
    print("| mode | precision | system | first step s | tokens/s | peak RSS GB | "
          "vs transformers eager |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for precision in args.precisions:
            rows = {s: run_child(args, s, mode, precision) for s in args.systems}
            base = (rows.get("transformers") or {}).get("tokens_per_s")
            for system, r in rows.items():
                if r is None:
                    continue
                ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
                print(f"| {mode} | {precision} | {system} | {r['first_step_s']:.1f} | "
                      f"{r['tokens_per_s']:.0f} | {r['peak_rss_gb']:.2f} | {ratio} |",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
