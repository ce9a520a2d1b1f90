"""`keras-lm finetune`: the command line of `run_finetune`."""

import argparse


def add_parser(sub) -> None:
    """Add the `finetune` sub-command to the `keras-lm` parser."""
    parser = sub.add_parser(
        "finetune", help="Fine-tune a model on a JSONL file (LoRA by default).",
        description="Each JSONL line is {\"text\": ...}, {\"prompt\": ..., \"completion\": ...} "
                    "or {\"messages\": [...]} (rendered with the model's chat template; only "
                    "assistant turns are learned). Writes DIR/adapter.lora.h5 and DIR/model "
                    "(a preset with the adapters merged, for generate and serve); running the "
                    "same command again resumes from DIR/checkpoint.")
    parser.add_argument("--preset", default=None,
                        help="As for generate (default: the default model).")
    parser.add_argument("--data", required=True, help="Training JSONL file.")
    parser.add_argument("--eval", dest="eval_data", default=None,
                        help="Evaluation JSONL file: loss and perplexity after each epoch.")
    parser.add_argument("--out", required=True, help="Output folder (new, or this run's).")
    parser.add_argument("--lora-rank", type=int, default=8,
                        help="Rank of the LoRA adapters (0: train every weight).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="Tokens per row (default: what the data needs, at most 1024).")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="AdamW learning rate (default 2e-4 with LoRA, 2e-5 without).")
    parser.add_argument("--pack", action="store_true",
                        help="Lay examples end to end in full rows (no padding).")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="Train adapters over a frozen int8 copy of the base (less "
                             "memory); the merged model uses the float base.")
    parser.add_argument("--remat", action="store_true",
                        help="Recompute activations in the backward pass (less memory).")
    parser.add_argument("--save-every", type=int, default=0,
                        help="Steps between checkpoints (default: each epoch's end).")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="Stop after this many steps (a short trial).")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from keras_lm.finetune.job import FinetuneOptions, run_finetune

    options = FinetuneOptions(
        data=args.data, out=args.out, preset=args.preset, eval_data=args.eval_data,
        lora_rank=args.lora_rank, epochs=args.epochs, batch_size=args.batch_size,
        sequence_length=args.sequence_length, learning_rate=args.learning_rate,
        pack=args.pack, quantize=args.quantize, remat=args.remat, seed=args.seed,
        save_every=args.save_every, max_steps=args.max_steps)
    result = run_finetune(options)
    summary = f"{result.steps} steps, train loss {result.train_loss:.4f} (last epoch)"
    if result.eval_loss is not None:
        summary += f", eval loss {result.eval_loss:.4f} (perplexity {result.eval_perplexity:.2f})"
    print(summary + f", {result.tokens_per_second:.0f} tokens/s.")
    print(f"Try it: keras-lm generate --preset {result.model_dir} \"...\"")
    return 0
