"""A fine-tuning run as a job: data in, checkpoints that resume, a LoRA file and a merged
preset out. `keras-lm finetune` is a thin layer over `run_finetune`.

The output folder holds only files this job writes: `run.json` (the run's settings, and what
marks the folder as ours), `checkpoint/` (the latest resumable state), `metrics.jsonl` (one
line per epoch), `adapter.lora.h5` (LoRA runs) and `model/` (the fine-tuned preset, adapters
merged into the weights).
"""

import dataclasses
import hashlib
import json
import math
import os
import time

import numpy as np

from keras_lm.finetune import data as data_lib
from keras_lm.finetune.checkpoint import load_checkpoint, save_checkpoint

RUN_FILE = "run.json"
OUR_ENTRIES = {RUN_FILE, "checkpoint", "checkpoint.new", "checkpoint.old", "metrics.jsonl",
               "adapter.lora.h5", "model"}


@dataclasses.dataclass
class FinetuneOptions:
    """Settings of one fine-tuning run (the `keras-lm finetune` flags)."""

    data: str
    out: str
    preset: str | None = None  # None: the default model
    eval_data: str | None = None
    lora_rank: int = 8  # 0: train every weight
    epochs: int = 1
    batch_size: int = 4
    sequence_length: int | None = None  # None: what the data needs, at most 1024
    learning_rate: float | None = None  # None: 2e-4 with LoRA, 2e-5 without
    pack: bool = False
    quantize: str | None = None  # "int8": a frozen int8 base under fp32 adapters
    remat: bool = False
    seed: int = 0
    save_every: int = 0  # steps between checkpoints (0: at the end of each epoch)
    max_steps: int | None = None  # stop after this many steps in all (a short trial)

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1.")
        if self.lora_rank < 0:
            raise ValueError("`lora_rank` must be 0 (full fine-tuning) or more.")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"`quantize` must be int8 or None, not {self.quantize!r}.")
        if self.quantize and not self.lora_rank:
            raise ValueError("An int8 base is frozen: quantize only with LoRA (--lora-rank > 0).")
        for path in (self.data, self.eval_data):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"Data file not found: {path}")


@dataclasses.dataclass
class FinetuneResult:
    steps: int
    train_loss: float
    eval_loss: float | None
    eval_perplexity: float | None
    tokens_per_second: float
    model_dir: str
    adapter_file: str | None


def run_finetune(options: FinetuneOptions, progress: bool = True, log=print) -> FinetuneResult:
    """Fine-tune a preset on JSONL data; resumes from `options.out` when it holds a checkpoint
    of the same run.

    Example:
    >>> run_finetune(FinetuneOptions(data="train.jsonl", out="run1"))  # doctest: +SKIP
    """
    import keras

    import keras_lm
    from keras_lm.presets.builtin import DEFAULT_PRESET

    options.check()
    preset = options.preset or DEFAULT_PRESET
    fingerprint = _fingerprint(options, preset)
    state = _claim_output(options.out, fingerprint)

    keras.utils.set_random_seed(options.seed)
    lm = _load_model(keras_lm, preset, options)
    preprocessor = lm.preprocessor
    if preprocessor is None:
        raise ValueError(f"{preset} has no preprocessor (tokenizer): it cannot read text data.")
    train = data_lib.load_examples(preprocessor, options.data)
    evaluation = data_lib.load_examples(preprocessor, options.eval_data) \
        if options.eval_data else None
    length = options.sequence_length or data_lib.fitting_length(
        train + (evaluation or []), min(1024, lm.backbone.max_sequence_length or 1024))
    pad = preprocessor.tokenizer.pad_token_id
    x, y, weight = data_lib.training_arrays(train, length, pad, pack=options.pack)
    eval_arrays = data_lib.training_arrays(evaluation, length, pad, pack=options.pack) \
        if evaluation else None

    rate = options.learning_rate or (2e-4 if options.lora_rank else 2e-5)
    lm.compile(optimizer=keras.optimizers.AdamW(rate, weight_decay=0.0 if options.lora_rank
                                                else 0.01),
               loss=keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True, reduction="mean_with_sample_weight"),
               weighted_metrics=[])
    steps_per_epoch = math.ceil(len(y) / options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps:
        total_steps = min(total_steps, options.max_steps)
    what = f"LoRA rank {options.lora_rank}" if options.lora_rank else "all weights"
    log(f"Fine-tuning {preset}: {len(y)} rows of {length} tokens, {steps_per_epoch} steps per "
        f"epoch, {what}{', int8 base' if options.quantize else ''}, learning rate {rate:g}.")

    step = 0
    if state is not None:
        step = load_checkpoint(_path(options, "checkpoint"), lm)
        log(f"Resuming at step {step} of {total_steps}.")
    trainer = _Trainer(lm, x, y, weight, options, steps_per_epoch)
    train_loss, speed = trainer.train(step, total_steps, progress, options.out,
                                  lambda epoch, train_loss: _end_epoch(
                                      lm, options, epoch, train_loss, eval_arrays, log))
    result = _finish(keras_lm, lm, preset, options, eval_arrays, log)
    return dataclasses.replace(result, steps=total_steps, train_loss=float(train_loss),
                               tokens_per_second=speed)


class _Trainer:
    """The step loop: shuffled full batches (the last padded with weightless rows, so one
    compiled step serves every batch), a progress bar, checkpoints."""

    def __init__(self, lm, x, y, weight, options, steps_per_epoch):
        self.lm, self.x, self.y, self.weight = lm, x, y, weight
        self.options, self.steps_per_epoch = options, steps_per_epoch

    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.options.seed, epoch]).permutation(len(self.y))
        rows = order[index * self.options.batch_size:(index + 1) * self.options.batch_size]
        short = self.options.batch_size - len(rows)
        weight = self.weight[rows]
        if short:  # repeat rows with zero weight: same shapes, no effect on the loss
            rows = np.concatenate([rows, order[:short]])
            weight = np.concatenate([weight, np.zeros_like(self.weight[order[:short]])])
        x = {k: v[rows] for k, v in self.x.items()}
        return x, self.y[rows], weight

    def train(self, step, total_steps, progress, out, end_epoch):
        import keras
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", disable=not progress,
                   dynamic_ncols=True)
        recent, epoch_losses, tokens, seconds = [], [], 0, 0.0
        last_epoch_loss = float("nan")
        try:
            while step < total_steps:
                x, y, weight = self.batch(step)
                # Dropout draws from the backend's global generator on some backends (torch):
                # seeding it by step makes a resumed run take the steps an unbroken one does.
                keras.utils.set_random_seed((self.options.seed * 1_000_003 + step) % 2**31)
                began = time.perf_counter()
                loss = float(self.lm.train_on_batch(x, y, sample_weight=weight))
                elapsed = time.perf_counter() - began
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"The loss became {loss} at step {step + 1}: lower the learning rate "
                        "(--learning-rate). The last checkpoint is kept.")
                step += 1
                if step > 1 or total_steps == 1:  # the first step includes compiling
                    tokens += int(x["padding_mask"].sum())
                    seconds += elapsed
                recent = (recent + [loss])[-20:]
                epoch_losses.append((loss, float(weight.sum())))
                bar.set_postfix(epoch=1 + (step - 1) // self.steps_per_epoch,
                                loss=f"{np.mean(recent):.4f}",
                                tok_s=f"{tokens / seconds:.0f}" if seconds else "-")
                bar.update(1)
                epoch_done = step % self.steps_per_epoch == 0 or step == total_steps
                every = self.options.save_every
                if epoch_done or (every and step % every == 0):
                    save_checkpoint(os.path.join(out, "checkpoint"), self.lm, step)
                if epoch_done:
                    bar.clear()
                    last_epoch_loss = _mean(epoch_losses)
                    end_epoch((step - 1) // self.steps_per_epoch + 1, last_epoch_loss)
                    epoch_losses = []
        finally:
            bar.close()
        return last_epoch_loss, (tokens / seconds if seconds else 0.0)


def _mean(pairs) -> float:
    total = sum(w for _, w in pairs)
    return sum(loss * w for loss, w in pairs) / total if total else float("nan")


def evaluate_loss(lm, arrays, batch_size: int) -> float:
    """Mean loss per trained token over `(x, y, weight)` arrays."""
    x, y, weight = arrays
    total = count = 0.0
    for start in range(0, len(y), batch_size):
        part = slice(start, start + batch_size)
        w = weight[part]
        loss = float(lm.test_on_batch({k: v[part] for k, v in x.items()}, y[part],
                                      sample_weight=w))
        total, count = total + loss * float(w.sum()), count + float(w.sum())
    return total / count


def _end_epoch(lm, options, epoch, train_loss, eval_arrays, log):
    record = {"epoch": epoch, "train_loss": round(train_loss, 6)}
    line = f"epoch {epoch}: train loss {train_loss:.4f}"
    if eval_arrays is not None:
        loss = evaluate_loss(lm, eval_arrays, options.batch_size)
        record.update(eval_loss=round(loss, 6), eval_perplexity=round(math.exp(loss), 4))
        line += f", eval loss {loss:.4f}, perplexity {math.exp(loss):.2f}"
    log(line)
    with open(_path(options, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _finish(keras_lm, lm, preset, options, eval_arrays, log):
    from keras_lm.models.lora_merge import merged_backbone

    adapter = None
    if options.lora_rank:
        adapter = _path(options, "adapter.lora.h5")
        lm.backbone.save_lora_weights(adapter)
        if options.quantize:  # merge into the float weights the int8 base came from
            float_lm = _load_model(keras_lm, preset, dataclasses.replace(options, quantize=None,
                                                                          lora_rank=0))
            float_lm.backbone.load_lora_weights(adapter)
            lm_to_merge = float_lm
        else:
            lm_to_merge = lm
        final = type(lm_to_merge)(backbone=merged_backbone(lm_to_merge.backbone),
                                  preprocessor=lm.preprocessor)
    else:
        final = lm
    model_dir = _path(options, "model")
    final.save_to_preset(model_dir)
    eval_loss = evaluate_loss(lm, eval_arrays, options.batch_size) if eval_arrays else None
    log(f"Saved the fine-tuned model to {model_dir}" + (f" and the adapters to {adapter}"
                                                         if adapter else "") + ".")
    return FinetuneResult(
        steps=0, train_loss=float("nan"), eval_loss=eval_loss,
        eval_perplexity=None if eval_loss is None else math.exp(eval_loss),
        tokens_per_second=0.0, model_dir=model_dir, adapter_file=adapter)


def _load_model(keras_lm, preset, options):
    import warnings

    import keras

    scope = keras.RematScope(mode="full") if options.remat else _no_scope()
    with scope:
        lm = keras_lm.models.CausalLM.from_preset(preset)
    if options.quantize:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm.quantize(options.quantize)
    if options.lora_rank:
        lm.backbone.enable_lora(options.lora_rank)
    return lm


class _no_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _path(options, name: str) -> str:
    return os.path.join(options.out, name)


def _fingerprint(options, preset) -> dict:
    settings = dataclasses.asdict(options)
    for name in ("out", "save_every", "eval_data", "max_steps"):
        settings.pop(name)  # these may change between a run and its resumption
    settings["preset"] = preset
    settings["data"] = os.path.abspath(options.data)
    settings["data_sha256"] = _sha256(options.data)
    return settings


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_run(out: str) -> dict:
    try:
        with open(os.path.join(out, RUN_FILE), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _claim_output(out: str, fingerprint: dict):
    """Make `out` this run's folder. Returns the stored run when resuming it, else None.

    A folder with files of its own (not this job's) is refused; so is one holding a different
    run, which would otherwise be overwritten."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder.")
    entries = set(os.listdir(out)) if os.path.isdir(out) else set()
    run = _read_run(out)
    if entries and not run:
        raise ValueError(f"--out {out} already holds files that this job did not write; "
                         "choose a new or empty folder.")
    foreign = entries - OUR_ENTRIES
    if foreign:
        raise ValueError(f"--out {out} holds files this job did not write "
                         f"({sorted(foreign)[:3]}); choose a new or empty folder.")
    if run:
        if run.get("settings") != fingerprint:
            changed = sorted(k for k in fingerprint
                             if run.get("settings", {}).get(k) != fingerprint[k])
            raise ValueError(f"--out {out} holds a run with other settings ({changed}); "
                             "resume it with the same settings or choose a new folder.")
        if os.path.isdir(os.path.join(out, "checkpoint")):
            return run
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, RUN_FILE), "w", encoding="utf-8") as f:
        json.dump({"settings": fingerprint}, f, indent=2)
    return None
