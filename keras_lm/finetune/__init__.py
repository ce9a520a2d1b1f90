"""Fine-tuning as a job: JSONL data, LoRA or full, checkpoints that resume, a merged preset."""

from keras_lm.finetune.job import FinetuneOptions, FinetuneResult, run_finetune

__all__ = ["FinetuneOptions", "FinetuneResult", "run_finetune"]
