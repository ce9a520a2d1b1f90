"""`SentencePieceTokenizer` on the `sentencepiece` library."""

import base64
import os
import re

import keras

from keras_lm.tokenizers.tokenizer import Tokenizer

PROTO_FILE = "vocabulary.spm"
JSON_FILE = "hf_tokenizer.json"


class _TokenizerJSONPieces:
    """A Hugging Face `tokenizer.json` (SentencePiece-style: BPE with byte fallback) behind the
    few `SentencePieceProcessor` methods the tokenizer uses, run by the `tokenizers` library:
    the same ids as `transformers` on the same file."""

    def __init__(self, text: str):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.backend = HFTokenizer.from_str(text)
        except Exception as error:  # the Rust parser's own error type
            raise ValueError(f"`tokenizer_json` is not a valid tokenizer.json: {error}") \
                from None
        self.backend.encode_special_tokens = True  # control tokens in text stay text
        added = self.backend.get_added_tokens_decoder()
        self.control = {i for i, token in added.items() if token.special}
        unknown = getattr(self.backend.model, "unk_token", None)
        self._unknown = self.backend.token_to_id(unknown) if unknown else 0

    def EncodeAsIds(self, text):
        if isinstance(text, str):
            return self.backend.encode(text, add_special_tokens=False).ids
        return [e.ids for e in self.backend.encode_batch(text, add_special_tokens=False)]

    def DecodeIds(self, ids):
        return self.backend.decode(ids, skip_special_tokens=False)

    def GetPieceSize(self):
        return self.backend.get_vocab_size(with_added_tokens=True)

    def IdToPiece(self, index):
        return self.backend.id_to_token(index) or ""

    def PieceToId(self, piece):
        index = self.backend.token_to_id(piece)
        return self._unknown if index is None else index

    def IsControl(self, index):
        return index in self.control

    def unk_id(self):
        return self._unknown


@keras.saving.register_keras_serializable(package="keras_lm")
class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model given as a file path or the serialized proto bytes.

    `special_tokens_in_strings=True` (KerasHub's argument) turns control tokens written in the
    text, such as `<start_of_turn>`, into their ids, as `transformers` does; by default they
    are plain text. Instead of `proto`, `tokenizer_json` (a path or the JSON text) takes a
    Hugging Face `tokenizer.json` of the same model, for checkpoints that ship only that.

    Example:
    >>> tok = SentencePieceTokenizer(proto="tokenizer.model")  # doctest: +SKIP
    >>> tok.detokenize(tok("hello world"))  # doctest: +SKIP
    'hello world'
    """

    # With `special_tokens_in_strings`: whether text after a control token gets the model's
    # dummy prefix again (sentencepiece per piece) or not (the prefix starts the text).
    prefix_after_control_tokens = False

    asset_files = (PROTO_FILE,)

    def __init__(
        self,
        proto=None,
        sequence_length: int | None = None,
        dtype: str = "int32",
        stop_token_ids=None,
        special_tokens_in_strings: bool = False,
        tokenizer_json: str | None = None,
        name=None,
        **kwargs,
    ):
        super().__init__(sequence_length=sequence_length, dtype=dtype, name=name,
                         stop_token_ids=stop_token_ids)
        if kwargs:
            raise TypeError(f"Unexpected arguments for {type(self).__name__}: {sorted(kwargs)}")
        self.special_tokens_in_strings = bool(special_tokens_in_strings)
        self._control_pattern = None
        self.proto = None
        self.tokenizer_json = None
        if proto is not None and tokenizer_json is not None:
            raise ValueError("Pass `proto` or `tokenizer_json`, not both.")
        if proto is not None:
            self.set_proto(proto)
        elif tokenizer_json is not None:
            self.set_tokenizer_json(tokenizer_json)

    def set_proto(self, proto) -> None:
        import sentencepiece

        if isinstance(proto, str) and proto.startswith("base64:"):
            proto = base64.b64decode(proto[len("base64:") :])
        if isinstance(proto, str):
            if not os.path.isfile(proto):
                raise ValueError(f"`proto` file not found: {proto!r}")
            with open(proto, "rb") as f:
                proto = f.read()
        if not isinstance(proto, (bytes, bytearray)) or not proto:
            raise ValueError("`proto` must be a SentencePiece model path or non-empty bytes.")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(bytes(proto))
        except Exception as error:  # sentencepiece raises RuntimeError/OSError variants
            raise ValueError(f"`proto` is not a valid SentencePiece model: {error}") from error
        self.proto = bytes(proto)
        self._processor = processor
        self._continuation = None
        self._control_pattern = None
        self._bind_special_tokens()

    def set_tokenizer_json(self, tokenizer_json: str) -> None:
        if not isinstance(tokenizer_json, str) or not tokenizer_json:
            raise ValueError("`tokenizer_json` must be a tokenizer.json path or its JSON text.")
        if not tokenizer_json.lstrip().startswith("{"):
            if not os.path.isfile(tokenizer_json):
                raise ValueError(f"`tokenizer_json` file not found: {tokenizer_json!r}")
            with open(tokenizer_json, encoding="utf-8") as f:
                tokenizer_json = f.read()
        self._processor = _TokenizerJSONPieces(tokenizer_json)
        self.tokenizer_json = tokenizer_json
        self._continuation = None
        self._control_pattern = None
        self._bind_special_tokens()

    def _require_proto(self):
        if self.proto is None and self.tokenizer_json is None:
            raise ValueError(
                f"{type(self).__name__} has no model: pass `proto`, or use `from_preset`."
            )

    def _encode(self, strings):
        self._require_proto()
        if not self.special_tokens_in_strings:
            return self._processor.EncodeAsIds(strings)
        return [self._encode_with_control_tokens(text) for text in strings]

    def _encode_with_control_tokens(self, text: str) -> list[int]:
        if self._control_pattern is None:
            processor = self._processor
            pieces = [processor.IdToPiece(i) for i in range(processor.GetPieceSize())
                      if processor.IsControl(i) and processor.IdToPiece(i)]
            pieces.sort(key=len, reverse=True)  # the longest match wins
            self._control_pattern = re.compile("(" + "|".join(map(re.escape, pieces)) + ")") \
                if pieces else re.compile("(?!)")
        ids = []
        for index, part in enumerate(self._control_pattern.split(text)):
            if index % 2:
                ids.append(self._processor.PieceToId(part))
            elif part:
                # The dummy "▁" prefix starts the text, not each piece after a control token
                # (as `transformers` does for Llama and Gemma; its Mistral conversion prefixes
                # every piece).
                first = index == 0 or self.prefix_after_control_tokens
                processor = self._processor if first else self._continuation_processor()
                ids.extend(processor.EncodeAsIds(part))
        return ids

    def tokenize_with_special_tokens(self, text: str) -> list[int]:
        self._require_proto()
        return self._encode_with_control_tokens(text)

    def _continuation_processor(self):
        """The processor for text after a control token: the model without its dummy
        prefix (the model itself when it has none, or when it comes from tokenizer.json)."""
        if getattr(self, "_continuation", None) is None:
            self._continuation = self._processor
            if self.proto is not None:
                import sentencepiece
                from sentencepiece import sentencepiece_model_pb2

                model = sentencepiece_model_pb2.ModelProto()
                model.ParseFromString(self.proto)
                if model.normalizer_spec.add_dummy_prefix:
                    model.normalizer_spec.add_dummy_prefix = False
                    self._continuation = sentencepiece.SentencePieceProcessor()
                    self._continuation.LoadFromSerializedProto(model.SerializeToString())
        return self._continuation

    def _decode(self, ids):
        self._require_proto()
        size = self._processor.GetPieceSize()
        return self._processor.DecodeIds([i for i in ids if 0 <= i < size])

    def vocabulary_size(self) -> int:
        self._require_proto()
        return self._processor.GetPieceSize()

    def id_to_token(self, id: int) -> str:
        self._require_proto()
        if not 0 <= int(id) < self.vocabulary_size():
            raise ValueError(f"`id` must be in [0, {self.vocabulary_size()}). Received: {id}")
        return self._processor.IdToPiece(int(id))

    def token_to_id(self, token: str) -> int | None:
        self._require_proto()
        token_id = self._processor.PieceToId(token)
        if token_id == self._processor.unk_id() and token != self._processor.IdToPiece(token_id):
            return None
        return token_id

    def get_config(self) -> dict:
        config = super().get_config()
        proto = None if self.proto is None else "base64:" + base64.b64encode(self.proto).decode()
        config["proto"] = proto
        # Beyond KerasHub's arguments: written only when set.
        if self.special_tokens_in_strings:
            config["special_tokens_in_strings"] = True
        if self.tokenizer_json is not None:
            config["tokenizer_json"] = self.tokenizer_json
        return config

    def asset_config_keys(self) -> tuple:
        return ("proto", "tokenizer_json")

    def save_assets(self, directory: str) -> None:
        self._require_proto()
        if self.proto is not None:
            with open(os.path.join(directory, PROTO_FILE), "wb") as f:
                f.write(self.proto)
        else:
            with open(os.path.join(directory, JSON_FILE), "w", encoding="utf-8") as f:
                f.write(self.tokenizer_json)

    @classmethod
    def asset_config_from_dir(cls, directory: str) -> dict:
        if os.path.isfile(os.path.join(directory, JSON_FILE)):
            return {"tokenizer_json": os.path.join(directory, JSON_FILE)}
        return {"proto": os.path.join(directory, PROTO_FILE)}
