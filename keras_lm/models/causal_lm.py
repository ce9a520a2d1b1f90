"""`CausalLM`: next-token prediction, training on raw text, and `generate()`."""

import keras
import numpy as np
from keras import ops

from keras_lm import checks
from keras_lm import samplers as samplers_lib
from keras_lm.backend import ops as backend_ops
from keras_lm.generation import arguments, controls
from keras_lm.generation import outputs as outputs_lib
from keras_lm.generation.engine import GenerationEngine, GenerationRequest
from keras_lm.generation.processors import VocabularyLimit, build_processors
from keras_lm.generation.text import normalize_stop_strings
from keras_lm.models.task import Task, is_batch_stream, is_raw_text, to_numpy_tree


@keras.saving.register_keras_serializable(package="keras_lm")
class CausalLM(Task):
    """Base class for generative language models.

    Wraps a decoder `backbone` and an optional `preprocessor`. `generate()` takes strings (or
    token id dicts without a preprocessor) and returns strings (or dicts).

    Example:
    >>> lm = keras_lm.models.CausalLM.from_preset("./gpt2_tiny")  # doctest: +SKIP
    >>> lm.compile(sampler="greedy")  # doctest: +SKIP
    >>> lm.generate("Keras is a", max_length=32)  # doctest: +SKIP
    """

    default_sampler = "top_k"

    def __init__(self, backbone, preprocessor=None, **kwargs):
        if type(self) is CausalLM:
            raise TypeError(
                "`CausalLM` is a base class: use a family class such as `GPT2CausalLM`, or "
                "`CausalLM.from_preset(...)`."
            )
        if self.backbone_cls is not None and not isinstance(backbone, self.backbone_cls):
            raise TypeError(
                f"`backbone` must be a {self.backbone_cls.__name__}. "
                f"Received: {type(backbone).__name__}"
            )
        arguments.matching_vocabularies(backbone, preprocessor)
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = backbone.input
        hidden = backbone(inputs)
        logits = backbone.token_embedding(hidden, reverse=True)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self._engine = GenerationEngine(self)
        self.compile()

    # -- compile ------------------------------------------------------------------------------
    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        weighted_metrics="auto",
        sampler=None,
        **kwargs,
    ):
        """Keras `compile` with LM defaults (Adam 2e-5, sparse cross-entropy on logits,
        sparse accuracy as a weighted metric), plus the `sampler` used by `generate`.

        Example:
        >>> lm.compile(sampler=keras_lm.samplers.TopKSampler(k=10))  # doctest: +SKIP
        """
        self.sampler = samplers_lib.get(self.default_sampler if sampler is None else sampler)
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(2e-5)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy()]
        super().compile(
            optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs
        )
        backend_ops.fuse_optimizer(self.optimizer)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Token losses that are only summed or averaged are the same over `[batch * tokens,
        # vocab]` as over `[batch, tokens, vocab]`, and the flat form is contiguous along the
        # vocabulary: Keras' torch cross-entropy moves the class axis of a 3-D input to
        # axis 1, a strided copy of every logit and a slow softmax (~15% of a GPT-2 step).
        if _sums_token_losses(self.loss, y, y_pred, sample_weight):
            y_pred = ops.reshape(y_pred, (-1, ops.shape(y_pred)[-1]))
            y = ops.reshape(y, (-1,))
            if sample_weight is not None:
                sample_weight = ops.reshape(sample_weight, (-1,))
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    # -- generate -----------------------------------------------------------------------------
    def generate(
        self,
        inputs,
        max_length: int | None = None,
        stop_token_ids="auto",
        strip_prompt: bool = False,
        *,
        max_new_tokens: int | None = None,
        sampler=None,
        stop_strings=None,
        stream: bool = False,
        return_log_probs: bool = False,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logit_bias: dict | None = None,
        logits_processors: list | None = None,
        json_schema: dict | bool | None = None,
    ):
        """Generate continuations of `inputs`.

        `inputs`: a string or list of strings (with a preprocessor), a dict of right-padded
        `token_ids` / `padding_mask` (without one), or a `tf.data.Dataset` / iterable of such
        batches (generated batch by batch, outputs concatenated). `max_length` bounds prompt +
        completion; `max_new_tokens` bounds the completion. `stop_token_ids`: "auto" (the
        tokenizer's end token), None, or ids; each row stops on its own. `sampler` overrides
        the compiled sampler for this call.

        Our additions (keyword-only): `stop_strings` (one or more strings, each row stops after
        the first one it produces; the text is cut right after it), `stream=True` (returns an
        iterator of new text: a string per step for one prompt, a list per step for a batch),
        `return_log_probs=True` (returns `(outputs, log_probs)`, the raw model log-probability
        of each generated token per row), and logits processors usable with every sampler:
        `min_p`, `repetition_penalty`, `presence_penalty`, `frequency_penalty`, `logit_bias`
        (`{token_id: bias}`) and `logits_processors` (callables `(logits, context) -> logits`).
        `json_schema` (a JSON schema dict, or True for any JSON object) constrains each
        completion to JSON valid against it (needs `llguidance`).

        Example:
        >>> lm.generate(["This is a", "Where are you"], max_length=30)  # doctest: +SKIP
        >>> for piece in lm.generate("Once", max_new_tokens=50, stream=True,
        ...                          stop_strings=["\\n\\n"]):  # doctest: +SKIP
        ...     print(piece, end="")
        """
        options = dict(
            max_new_tokens=max_new_tokens, sampler=sampler, stop_strings=stop_strings,
            min_p=min_p, repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
            logit_bias=logit_bias, logits_processors=logits_processors,
        )
        if is_batch_stream(inputs):
            if stream or return_log_probs:
                raise ValueError("`stream` and `return_log_probs` take one batch, not a dataset.")
            outputs = [
                self.generate(
                    to_numpy_tree(batch), max_length, stop_token_ids, strip_prompt, **options
                )
                for batch in inputs
            ]
            return outputs_lib.concatenate(outputs)
        # Every argument is checked before anything runs or changes.
        sampler = self.sampler if sampler is None else samplers_lib.get(sampler)
        sampler.check_vocabulary(self.backbone.vocabulary_size)
        max_length = checks.positive_int(max_length, "max_length", allow_none=True)
        max_new_tokens = checks.positive_int(max_new_tokens, "max_new_tokens", allow_none=True)
        stops = normalize_stop_strings(stop_strings)
        processors = self._processors(
            min_p, repetition_penalty, presence_penalty, frequency_penalty, logit_bias,
            logits_processors,
        )
        stop_ids = self._stop_ids(stop_token_ids)
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if (stops or stream) and tokenizer is None:
            raise ValueError(
                "`stop_strings` and `stream=True` need a preprocessor with a tokenizer."
            )
        prompts, text_input, batched, max_length = self._prompts(
            inputs, max_length, max_new_tokens
        )
        lengths = np.array([len(p) for p in prompts])
        limit = arguments.new_token_budget(lengths, max_length, max_new_tokens, self.backbone)
        if json_schema is not None and json_schema is not False:
            from keras_lm.generation import structured

            rest = {k: v for k, v in options.items() if k not in ("sampler", "max_new_tokens")}
            tokens = structured.generate_json(self, prompts, limit, stop_ids, json_schema,
                                              sampler, **rest, stream=stream,
                                              return_log_probs=return_log_probs)
            return self._format(prompts, tokens, int((lengths + limit).max()), text_input,
                                batched, strip_prompt)
        request = GenerationRequest(
            prompts=prompts,
            max_new=limit,
            stop_token_ids=stop_ids,
            pad_token_id=self._pad_id(),
            processors=processors,
            log_probs=return_log_probs and not stream,
        )
        if stream:
            return controls.stream(self._engine, request, sampler, tokenizer, stops, batched)
        result = controls.decode(self._engine, request, sampler, tokenizer, stops)
        if result.beams is not None:
            outputs = self._format_beams(result.beams, prompts, text_input, batched,
                                         strip_prompt)
        else:
            # As wide as the longest reachable row (`max_length` when only it is given).
            width = int((lengths + limit).max())
            outputs = self._format(prompts, result.tokens, width, text_input, batched,
                                   strip_prompt, result.texts)
        if not return_log_probs:
            return outputs
        log_probs = controls.fill_log_probs(self, prompts, result.tokens, result.log_probs)
        return outputs, (log_probs if batched else log_probs[0])

    def chat(self, messages, *, max_new_tokens: int = 512, tools=None, stream: bool = False,
             template_variables: dict | None = None, **generate_options):
        """The assistant's reply to `messages` (`[{"role": "user", "content": ...}, ...]`):
        the conversation rendered with the chat template, then generated until the end of
        the turn (the family's end-of-turn token, the end token, or `max_new_tokens`).

        `generate_options` are `generate`'s (`sampler`, `stop_strings`, `min_p`, ...);
        `stream=True` returns an iterator of text pieces.

        Example:
        >>> lm.chat([{"role": "user", "content": "Name a colour."}])  # doctest: +SKIP
        'Blue.'
        """
        from keras_lm.chat.conversation import reply

        return reply(self, messages, max_new_tokens=max_new_tokens, tools=tools, stream=stream,
                     template_variables=template_variables, **generate_options)

    def _prompts(self, inputs, max_length, max_new_tokens):
        """`(prompt id rows, text_input, batched, max_length)` from `generate`'s inputs; rows
        are ragged, so nothing is sized by `max_length` or `max_new_tokens`."""
        # Lists are prompts; the preprocessor names any item that is not a string.
        text_input = is_raw_text(inputs) or isinstance(inputs, (list, tuple))
        if text_input:
            if self.preprocessor is None:
                raise ValueError(
                    "String `inputs` need a preprocessor; this model has none. Pass a dict of "
                    "`token_ids` and `padding_mask` instead."
                )
            batched = not isinstance(inputs, (str, bytes))
            if max_length is None and max_new_tokens is None:
                max_length = self.preprocessor.sequence_length
            prompts = self.preprocessor.prompt_rows(inputs)
        elif isinstance(inputs, dict):
            batched = True
            token_dict = arguments.token_dict(inputs, self.backbone.vocabulary_size)
            if max_length is None and max_new_tokens is None:
                max_length = token_dict["token_ids"].shape[1]
            prompts = [
                row[mask] for row, mask in
                zip(token_dict["token_ids"], token_dict["padding_mask"], strict=True)
            ]
        else:
            raise TypeError(
                "`inputs` must be a string, a list of strings, a dict with `token_ids` and "
                f"`padding_mask`, or a dataset of those. Received: {type(inputs).__name__}"
            )
        if not prompts:
            raise ValueError("`inputs` must hold at least one prompt; received an empty batch.")
        if any(len(p) == 0 for p in prompts):
            raise ValueError(
                "Every prompt needs at least one token: a row of `inputs` is empty (an empty "
                "string without a start token, or a `padding_mask` row with no True)."
            )
        longest = max(len(p) for p in prompts)
        if max_length is not None and longest > max_length:
            raise ValueError(
                f"`max_length`={max_length} is shorter than the longest prompt "
                f"({longest} tokens). Pass a larger `max_length`."
            )
        return prompts, text_input, batched, max_length

    def _processors(self, min_p, repetition_penalty, presence_penalty, frequency_penalty,
                    logit_bias, logits_processors) -> list:
        vocabulary = self.backbone.vocabulary_size
        processors = build_processors(
            min_p, repetition_penalty, presence_penalty, frequency_penalty, logit_bias,
            logits_processors, vocabulary_size=vocabulary,
        )
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if tokenizer is not None and tokenizer.id_limit() < vocabulary:
            # Padded embedding rows (real checkpoints round the vocabulary up) have no text.
            processors.insert(0, VocabularyLimit(tokenizer.id_limit()))
        return processors

    def _stop_ids(self, stop_token_ids) -> tuple[int, ...]:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return arguments.stop_ids(stop_token_ids, tokenizer, self.backbone.vocabulary_size)

    def _pad_id(self):
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return int(getattr(tokenizer, "pad_token_id", 0) or 0)

    def _format(self, prompts, generated, width, text_input, batched, strip_prompt,
                completions=None):
        pad = self._pad_id()
        rows = [list(g) if strip_prompt else list(p) + list(g) for p, g in
                zip(prompts, generated, strict=True)]
        if text_input:
            if completions is not None:  # cut at stop strings, exactly
                texts = [c if strip_prompt else self._text(p) + c
                         for p, c in zip(prompts, completions, strict=True)]
            else:
                texts = [self._text(r) for r in rows]
            return texts if batched else texts[0]
        return outputs_lib.rows_to_token_dict(rows, width, pad)

    def _text(self, ids):
        return self.preprocessor.generate_postprocess(
            {"token_ids": np.asarray(ids, np.int32), "padding_mask": np.ones(len(ids), bool)}
        )

    def _format_beams(self, all_beams, prompts, text_input, batched, strip_prompt):
        outputs = []
        for prompt, beams in zip(prompts, all_beams, strict=True):
            rows = [[int(t) for t in (ids if strip_prompt else list(prompt) + list(ids))]
                    for ids, _ in beams]
            if text_input:
                rows = [self._text(r) for r in rows]
            outputs.append(rows)
        return outputs if batched else outputs[0]

    # -- score --------------------------------------------------------------------------------
    def score(
        self,
        token_ids,
        padding_mask=None,
        scoring_mode: str = "logits",
        layer_intercept_fn=None,
        target_ids=None,
    ):
        """Per-token logits `[batch, tokens, vocab]` or losses `[batch, tokens]`.

        `layer_intercept_fn(x, i)` sees (and may replace) activations: i = -1 for the
        embeddings, then each block's output. "loss" mode needs `target_ids`.

        Example:
        >>> lm.score(ids, scoring_mode="loss", target_ids=ops.roll(ids, -1, 1))  # doctest: +SKIP
        """
        if scoring_mode not in ("logits", "loss"):
            raise ValueError(
                f'`scoring_mode` must be "logits" or "loss". Received: {scoring_mode!r}'
            )
        if scoring_mode == "loss" and target_ids is None:
            raise ValueError('`target_ids` must be provided when `scoring_mode="loss"`.')
        arguments.concrete_ids(token_ids, "token_ids", self.backbone.vocabulary_size)
        if target_ids is not None:
            arguments.concrete_ids(target_ids, "target_ids", self.backbone.vocabulary_size)
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(token_ids), "bool")
        hidden, _ = self.backbone.decode(
            token_ids, padding_mask=padding_mask, layer_intercept_fn=layer_intercept_fn
        )
        logits = self.backbone.logits(hidden)
        if scoring_mode == "logits":
            return logits
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
        return loss_fn(ops.convert_to_tensor(target_ids, "int32"), ops.cast(logits, "float32"))


def _sums_token_losses(loss, y, y_pred, sample_weight) -> bool:
    """A sparse cross-entropy reduced to one number, on `[batch, tokens]` labels (and
    weights) for `[batch, tokens, vocab]` logits."""
    if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return False
    if loss.reduction not in ("sum", "sum_over_batch_size", "mean", "mean_with_sample_weight"):
        return False
    if getattr(loss, "_fn_kwargs", {}).get("axis", -1) not in (-1, 2):
        return False
    shapes = [getattr(t, "shape", None) for t in (y, y_pred)]
    if any(shape is None for shape in shapes) or len(shapes[0]) != 2 or len(shapes[1]) != 3:
        return False
    if tuple(shapes[0]) != tuple(shapes[1][:2]):  # left to Keras, which names both shapes
        return False
    weight_shape = getattr(sample_weight, "shape", None)
    return sample_weight is None or (weight_shape is not None and len(weight_shape) == 2)
