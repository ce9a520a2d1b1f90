"""The `keras-lm` command line: generate text, list presets, convert checkpoints."""

import argparse
import os
import sys
import tempfile
import time

# JAX keeps compiled programs here between runs; KERAS_LM_COMPILE_CACHE=off disables it.
_DEFAULT_COMPILE_CACHE = os.path.join("~", ".cache", "keras_lm", "jax")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-lm", description="Pretrained causal language models for Keras 3."
    )
    parser.add_argument("--backend", choices=["jax", "torch", "tensorflow"],
                        help="Keras backend (default: KERAS_BACKEND, else jax, torch, tf).")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="Generate text from one or more prompts.")
    gen.add_argument("prompts", nargs="+", help="Prompt strings.")
    gen.add_argument("--preset", default=None,
                     help="Preset name, kaggle:// or hf:// handle, or local folder. "
                          "Default: a tiny random-weight demo model.")
    gen.add_argument("--max-length", type=int, default=None)
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--sampler", default=None,
                     help="greedy, random, top_k, top_p, beam or contrastive.")
    gen.add_argument("--dtype", default=None, help="e.g. float32, bfloat16.")
    gen.add_argument("--stop", action="append", default=None,
                     help="Stop string (repeatable); each prompt stops after the first one.")
    gen.add_argument("--stream", action="store_true",
                     help="Print text as it is generated (one prompt at a time).")

    sub.add_parser("presets", help="List built-in preset names.")

    convert = sub.add_parser("convert", help="Load any supported checkpoint, save a native preset.")
    convert.add_argument("source")
    convert.add_argument("destination")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # Keras uses TensorFlow's file system helpers when TF is installed; keep its logs quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    import keras_lm

    cache = os.environ.get("KERAS_LM_COMPILE_CACHE", _DEFAULT_COMPILE_CACHE)
    if cache.lower() not in ("", "0", "off", "none"):
        from keras_lm.generation.compile import use_compilation_cache

        use_compilation_cache(os.path.expanduser(cache))
    try:
        if args.command == "presets":
            for name, info in keras_lm.models.CausalLM.presets.items():
                print(f"{name:32s} {info['params']:>6s}  {info['handle']}")
            return 0
        if args.command == "convert":
            lm = keras_lm.models.CausalLM.from_preset(args.source)
            lm.save_to_preset(args.destination)
            print(f"Saved {type(lm).__name__} to {args.destination}")
            return 0
        return _generate(args, keras_lm)
    except (ValueError, TypeError) as error:
        print(f"keras-lm: error: {error}", file=sys.stderr)
        return 2


def _generate(args, keras_lm) -> int:
    preset = args.preset
    if preset is None:
        from keras_lm.demo import build_demo_preset

        preset = build_demo_preset(os.path.join(tempfile.gettempdir(), "keras_lm_demo"))
        print("Using the built-in demo model (tiny, random weights: the text is noise). "
              "Pass --preset for a real checkpoint.", file=sys.stderr)
    kwargs = {"dtype": args.dtype} if args.dtype else {}
    start = time.perf_counter()
    lm = keras_lm.models.CausalLM.from_preset(preset, **kwargs)
    if args.sampler:
        lm.compile(sampler=args.sampler)
    loaded = time.perf_counter()
    max_length = args.max_length
    if max_length is None and args.max_new_tokens is None:
        max_length = 32
    options = dict(max_length=max_length, max_new_tokens=args.max_new_tokens,
                   stop_strings=args.stop)
    if args.stream:
        for prompt in args.prompts:
            print(prompt, end="", flush=True)
            for piece in lm.generate(prompt, stream=True, **options):
                print(piece, end="", flush=True)
            print()
    else:
        for text in lm.generate(args.prompts, **options):
            print(text)
    done = time.perf_counter()
    print(f"[loaded in {loaded - start:.1f}s, generated in {done - loaded:.1f}s "
          f"on {os.environ.get('KERAS_BACKEND')}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
