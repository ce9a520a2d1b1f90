"""Per-token decode time versus `max_length`, and versus the number of tokens generated.

KerasHub allocates and attends its cache at `max_length`, so its per-token time grows with it;
ours follows the real length. First table: same model, same prompt (32 tokens), same 64 new
tokens at several `max_length`. Second table: the mean per-token time of longer and longer
generations, which grows only with the attention over the real length (no cache copies).
`--model gemma3` uses the Gemma 3 270M shape instead (one KV head: a batch-1 cache is one row).
Run: python benchmarks/max_length.py [--model gemma3] [--lengths 256 1024 4096]
     [--generated 64 512 2048]
"""

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--generated", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--model", choices=["gpt2", "gemma3"], default="gpt2")
    args = parser.parse_args()

    import keras

    import keras_lm

    longest = max(*args.lengths, 32 + max(args.generated))
    if args.model == "gemma3":
        from generate import SHAPES, build_keras_lm

        lm, vocab, name = build_keras_lm("gemma3", SHAPES["gemma3"]), 262144, "Gemma 3 270M"
    else:
        backbone = keras_lm.models.GPT2Backbone(
            vocabulary_size=50257, num_layers=6, num_heads=8, hidden_dim=512,
            intermediate_dim=2048, max_sequence_length=longest)
        lm, vocab, name = keras_lm.models.GPT2CausalLM(backbone=backbone), 50257, "6x512 GPT-2"
    lm.compile(sampler="greedy")
    ids = np.random.default_rng(0).integers(1, vocab, size=(1, 32)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    print(f"keras_lm ({keras.backend.backend()}), {name} shape, prompt 32, "
          f"{args.new_tokens} new tokens")
    print(f"{'max_length':>10s} {'ms/token':>9s} {'vs first':>9s}")
    base = None
    for length in args.lengths:
        per_token = _ms_per_token(lm, x, args.new_tokens, max_length=length)
        base = base or per_token
        print(f"{length:10d} {per_token:9.2f} {per_token / base:9.2f}")
    print(f"\n{'generated':>10s} {'ms/token':>9s} {'vs first':>9s}")
    base = None
    for count in args.generated:
        per_token = _ms_per_token(lm, x, count, repeats=1 if count > 512 else 3)
        base = base or per_token
        print(f"{count:10d} {per_token:9.2f} {per_token / base:9.2f}")


def _ms_per_token(lm, x, new_tokens, max_length=None, repeats=3):
    def run():
        lm.generate(x, max_length=max_length, max_new_tokens=new_tokens, stop_token_ids=None)

    run()  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2] / new_tokens


if __name__ == "__main__":
    main()
