"""The `keras-lm` command line: generate text, list presets, convert checkpoints."""

import argparse
import os
import sys
import time
import warnings

from keras_lm.finetune import command as finetune_command

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
                     help="Preset name, kaggle:// or hf:// handle, local folder or .gguf "
                          "file. Default: gemma3_270m (Gemma 3 270M, shipped on PyPI); "
                          "`demo` is a tiny random-weight model.")
    gen.add_argument("--max-length", type=int, default=None)
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--sampler", default=None,
                     help="greedy, random, top_k, top_p, beam or contrastive.")
    gen.add_argument("--dtype", default=None, help="e.g. float32, bfloat16.")
    gen.add_argument("--stop", action="append", default=None,
                     help="Stop string (repeatable); each prompt stops after the first one.")
    gen.add_argument("--stream", action="store_true",
                     help="Print text as it is generated (one prompt at a time).")

    chat = sub.add_parser("chat", help="Talk to a model in the terminal (its chat template; "
                                       "/reset, /system TEXT, /exit; Ctrl-C stops an answer).")
    chat.add_argument("--preset", default=None, help="As for generate.")
    chat.add_argument("--system", default=None, help="A system message to start with.")
    chat.add_argument("--max-new-tokens", type=int, default=512)
    chat.add_argument("--sampler", default=None,
                      help="greedy, random, top_k, top_p, beam or contrastive.")
    chat.add_argument("--dtype", default=None, help="e.g. float32, bfloat16.")
    chat.add_argument("--stop", action="append", default=None,
                      help="Stop string (repeatable), besides the end of the turn.")

    serve = sub.add_parser("serve", help="An OpenAI-compatible HTTP API (/v1/completions, "
                                         "/v1/chat/completions, /v1/models).")
    serve.add_argument("--preset", default=None, help="As for generate.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="Address to listen on (default 127.0.0.1: this machine only).")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("KERAS_LM_API_KEY"),
                       help="Require `Authorization: Bearer KEY` (default: $KERAS_LM_API_KEY).")
    serve.add_argument("--model-name", default=None,
                       help="The name clients ask for (default: the preset).")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="Requests that may wait; more get HTTP 429.")
    serve.add_argument("--max-prompt-tokens", type=int, default=None)
    serve.add_argument("--max-tokens-limit", type=int, default=4096)
    serve.add_argument("--dtype", default=None, help="e.g. float32, bfloat16.")
    serve.add_argument("--quantize", choices=["int8", "int4"], default=None,
                       help="Quantize the weights after loading (int8: ~2x faster decoding; "
                            "int4: groups of 32, a quarter of the float32 weight memory).")
    serve.add_argument("--max-batch", type=int, default=8,
                       help="Sequences decoded together (continuous batching slots).")
    serve.add_argument("--prefix-cache-mb", type=int, default=256,
                       help="Memory for reusing the keys and values of earlier prompts "
                            "(0: off).")

    score = sub.add_parser("score", help="Per-token log-probabilities and perplexity of a "
                                         "text file.")
    score.add_argument("file", help="UTF-8 text file ('-' reads standard input).")
    score.add_argument("--preset", default=None, help="As for generate.")
    score.add_argument("--window", type=int, default=None,
                       help="Tokens scored per forward pass (default: the preprocessor's "
                            "sequence length).")

    sub.add_parser("presets", help="List built-in preset names.")
    finetune_command.add_parser(sub)

    convert = sub.add_parser(
        "convert", help="Load any supported checkpoint (preset, KerasHub or Hugging Face folder, "
                        "GGUF, hf:// or kaggle:// handle) and write it in another format.")
    convert.add_argument("source")
    convert.add_argument("destination")
    convert.add_argument("--to", choices=("keras_hub", "keras", "hf"), default="keras_hub",
                         help="keras_hub: a preset folder in KerasHub's layout (default; loads "
                              "in KerasHub too); keras: one .keras file for "
                              "keras.saving.load_model; hf: a Hugging Face folder for "
                              "transformers.")
    convert.add_argument("--overwrite", action="store_true",
                         help="Write into a folder that holds other files (they are kept).")
    return parser


REPORT_URL = "the keras_lm issue tracker"


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit code 2."""


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # Keras uses TensorFlow's file system helpers when TF is installed; keep its logs quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, CommandError) as error:
        print(f"keras-lm: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-lm: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug of ours: say so, and where to report it
        import traceback

        traceback.print_exc()
        print(f"keras-lm: internal error ({type(error).__name__}: {_one_line(error)}). "
              f"This is a bug; please report it, with the command and the trace above, at "
              f"{REPORT_URL}.", file=sys.stderr)
        return 1


def _one_line(error) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename:
        text = f"{error.strerror or text}: {error.filename}"
    return " ".join(text.split())


def _run(args) -> int:
    import keras_lm

    _use_compile_cache()
    if args.command == "presets":
        from keras_lm.presets.builtin import PRESETS_BY_FAMILY, format_params

        for backbone, entries in PRESETS_BY_FAMILY.items():
            print(f"{backbone.removesuffix('Backbone')}:")
            for name, handle, params, _ in entries:
                print(f"  {name:32s} {format_params(params):>7s}  {handle}")
        return 0
    if args.command == "convert":
        return _convert(args, keras_lm)
    if args.command == "score":
        return _score(args, keras_lm)
    if args.command == "chat":
        return _chat(args, keras_lm)
    if args.command == "serve":
        return _serve(args, keras_lm)
    if args.command == "finetune":
        return finetune_command.run(args)
    return _generate(args, keras_lm)


def _use_compile_cache() -> None:
    cache = os.environ.get("KERAS_LM_COMPILE_CACHE", _DEFAULT_COMPILE_CACHE)
    if cache.lower() in ("", "0", "off", "none"):
        return
    cache = os.path.expanduser(cache)
    try:
        os.makedirs(cache, exist_ok=True)
        if not os.access(cache, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", cache)
    except OSError as error:
        print(f"keras-lm: warning: compile cache {cache} is not usable ({error.strerror}); "
              "running without it (set KERAS_LM_COMPILE_CACHE to another folder, or off).",
              file=sys.stderr)
        return
    from keras_lm.generation.compile import use_compilation_cache

    use_compilation_cache(cache)


def _convert(args, keras_lm) -> int:
    source = os.path.realpath(args.source)
    destination = os.path.realpath(args.destination)
    inside = destination.startswith(source.rstrip(os.sep) + os.sep)
    if os.path.exists(source) and (destination == source or inside):
        raise CommandError(
            f"the destination {args.destination} is the source or inside it; choose a new "
            "folder (converting in place would mix the two checkpoints)"
        )
    if args.to == "keras" and not args.destination.endswith(".keras"):
        raise CommandError(f"--to keras writes one file whose name ends in .keras; got "
                           f"{args.destination}")
    if args.to == "keras" and os.path.exists(args.destination):
        raise CommandError(f"{args.destination} exists; choose a new file name")
    from tqdm.auto import tqdm

    with tqdm(total=2, desc="Converting", unit="step", file=sys.stderr, disable=None,
              bar_format="{desc}: {n}/{total} {postfix}") as bar:  # shown on a terminal
        bar.set_postfix_str(f"loading {args.source}")
        lm = keras_lm.models.CausalLM.from_preset(args.source)
        bar.update()
        bar.set_postfix_str(f"writing {args.destination}")
        if args.to == "hf":
            lm.export_to_transformers(args.destination)
        elif args.to == "keras":
            lm.save(args.destination)
        else:
            lm.save_to_preset(args.destination, overwrite=args.overwrite)
        bar.update()
    print(f"Saved {type(lm).__name__} to {args.destination} ({args.to})")
    return 0


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise CommandError(f"{path} is not UTF-8 text ({error.reason} at byte "
                           f"{error.start})") from None


def _score(args, keras_lm) -> int:
    """Print `token<TAB>log-prob` for every token after the first, then the perplexity."""
    import math

    import numpy as np

    from keras_lm.backend import ops
    from keras_lm.presets.builtin import DEFAULT_PRESET

    text = _read_text(args.file)
    lm = keras_lm.models.CausalLM.from_preset(args.preset or DEFAULT_PRESET)
    if lm.preprocessor is None:
        raise CommandError("this preset has no tokenizer, so it cannot score text")
    ids = lm.preprocessor.prompt_rows([text])[0]
    if len(ids) < 2:
        raise CommandError(f"{args.file} holds fewer than two tokens: nothing to score")
    window = args.window or lm.preprocessor.sequence_length
    if window < 2:
        raise CommandError("--window must be at least 2")
    tokenizer, total, count = lm.preprocessor.tokenizer, 0.0, 0
    starts = range(0, len(ids) - 1, window - 1)  # each window re-reads its first token
    if len(starts) > 1 and sys.stderr.isatty():
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Scoring", unit="window")
    for start in starts:
        chunk = ids[start:start + window][None]
        losses = ops.convert_to_numpy(lm.score(
            chunk[:, :-1], scoring_mode="loss", target_ids=chunk[:, 1:]))[0]
        for token, loss in zip(chunk[0, 1:], losses, strict=True):
            print(f"{tokenizer.id_to_token(int(token))!r}\t{-float(loss):.4f}")
        total, count = total + float(np.sum(losses)), count + len(losses)
    print(f"perplexity: {math.exp(total / count):.4f} over {count} tokens")
    return 0


def _generate(args, keras_lm) -> int:
    from keras_lm.presets.builtin import DEFAULT_PRESET

    preset = args.preset or DEFAULT_PRESET
    if preset == "demo":
        print("Using the demo model (tiny, random weights: the text is noise).",
              file=sys.stderr)
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


def quantization_config(mode: str):
    """The `quantize()` config the command line uses: int4 in groups of 32 (llama.cpp's block
    size; Keras' default 128 loses more quality), Keras' default otherwise."""
    import keras

    return keras.quantizers.Int4QuantizationConfig(block_size=32) if mode == "int4" else None


def _serve(args, keras_lm) -> int:
    try:
        import uvicorn

        from keras_lm.serve.app import create_app
    except ImportError as error:
        raise CommandError(f"serving needs FastAPI and uvicorn: pip install \"keras-lm[serve]\" "
                           f"({error.name} is missing)") from None
    from keras_lm.presets.builtin import DEFAULT_PRESET

    preset = args.preset or DEFAULT_PRESET
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print("keras-lm: warning: listening beyond this machine without --api-key; anyone who "
              "can reach the port can use the model.", file=sys.stderr)
    kwargs = {"dtype": args.dtype} if args.dtype else {}
    lm = keras_lm.models.CausalLM.from_preset(preset, **kwargs)
    if args.quantize:
        with warnings.catch_warnings():  # Keras names every layer without weights to quantize
            warnings.simplefilter("ignore")
            lm.quantize(args.quantize, config=quantization_config(args.quantize))
    app = create_app(lm, args.model_name or os.path.basename(preset.rstrip("/")),
                     api_key=args.api_key, max_queue=args.max_queue,
                     max_prompt_tokens=args.max_prompt_tokens,
                     max_tokens_limit=args.max_tokens_limit, slots=args.max_batch,
                     prefix_cache_bytes=args.prefix_cache_mb << 20)
    print(f"keras-lm: serving {preset} on http://{args.host}:{args.port}/v1", file=sys.stderr)
    # On Ctrl-C / SIGTERM uvicorn stops accepting and lets running requests finish first.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=30)
    return 0


CHAT_HELP = "Commands: /reset (forget the conversation), /system TEXT, /exit (or Ctrl-D)."


def _chat(args, keras_lm) -> int:
    from keras_lm.presets.builtin import DEFAULT_PRESET

    kwargs = {"dtype": args.dtype} if args.dtype else {}
    lm = keras_lm.models.CausalLM.from_preset(args.preset or DEFAULT_PRESET, **kwargs)
    if args.sampler:
        lm.compile(sampler=args.sampler)
    lm.preprocessor.chat_template()  # no template at all: one clear error, before the loop
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:  # at the prompt: a fresh line, not the end
            print()
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(system)
            print("[conversation cleared]", file=sys.stderr)
            continue
        if text.startswith("/system"):
            content = text[len("/system"):].strip()
            system = [{"role": "system", "content": content}] if content else []
            history = system + [m for m in history if m["role"] != "system"]
            print("[system message set]" if content else "[system message removed]",
                  file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"[unknown command {text.split()[0]}] {CHAT_HELP}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in lm.chat(history, stream=True, max_new_tokens=args.max_new_tokens,
                                 stop_strings=args.stop):
                reply.append(piece)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # stops this answer; the conversation goes on
            print(" [stopped]", end="")
        except ValueError as error:  # e.g. the template refuses the conversation
            history.pop()
            print(f"[error: {_one_line(error)}]", file=sys.stderr)
            continue
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


if __name__ == "__main__":
    sys.exit(main())
