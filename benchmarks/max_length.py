"""Per-token decode time versus `max_length` (keras_lm).

KerasHub allocates and attends its cache at `max_length`, so its per-token time grows with it;
ours follows the real length. Same model, same prompt (32 tokens), same 64 new tokens.
Run: python benchmarks/max_length.py [--lengths 256 1024 4096]
"""

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    import keras

    import keras_lm

    backbone = keras_lm.models.GPT2Backbone(
        vocabulary_size=50257, num_layers=6, num_heads=8, hidden_dim=512,
        intermediate_dim=2048, max_sequence_length=max(args.lengths),
    )
    lm = keras_lm.models.GPT2CausalLM(backbone=backbone)
    lm.compile(sampler="greedy")
    ids = np.random.default_rng(0).integers(1, 50257, size=(1, 32)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    print(f"keras_lm ({keras.backend.backend()}), 6x512 GPT-2 shape, prompt 32, "
          f"{args.new_tokens} new tokens")
    print(f"{'max_length':>10s} {'ms/token':>9s} {'vs first':>9s}")
    base = None
    for length in args.lengths:
        def run(length=length):
            lm.generate(x, max_length=length, max_new_tokens=args.new_tokens,
                        stop_token_ids=None)

        run()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        per_token = 1000 * sorted(times)[1] / args.new_tokens
        base = base or per_token
        print(f"{length:10d} {per_token:9.2f} {per_token / base:9.2f}")


if __name__ == "__main__":
    main()
