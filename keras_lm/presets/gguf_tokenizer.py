"""Tokenizers from GGUF metadata (`tokenizer.ggml.*`).

`llama`-style vocabularies (SentencePiece BPE: pieces, scores, token types) become a
SentencePiece model proto, so the `sentencepiece` library tokenizes exactly as the original
`tokenizer.model` did; `gpt2`-style vocabularies (byte-level BPE: tokens and merges) become a
vocabulary and merge list for `BytePairTokenizer`.
"""

import numpy as np

SPACE_MARK = "\u2581"
# GGUF token types; SentencePiece's piece types use the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_kind(metadata: dict, source: str) -> str:
    kind = metadata.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in metadata:
        raise ValueError(f"{source} holds no tokenizer (no tokenizer.ggml.model / tokens).")
    if kind not in ("llama", "gpt2"):
        raise ValueError(f"{source}: GGUF tokenizer model {kind!r} is not supported "
                         "('llama' SentencePiece and 'gpt2' byte-level BPE are).")
    return kind


def _token_types(metadata: dict, count: int) -> np.ndarray:
    types = metadata.get("tokenizer.ggml.token_type")
    if types is None:
        return np.full(count, NORMAL, np.int32)
    types = np.asarray(types, np.int32)
    if len(types) != count:
        raise ValueError(f"GGUF token_type has {len(types)} entries for {count} tokens.")
    return types


def sentencepiece_proto(metadata: dict, source: str) -> bytes:
    """A serialized SentencePiece BPE model equal to the one the GGUF was converted from.

    llama.cpp spells Gemma's whitespace-run pieces with ' ' (user-defined in the GGUF) where
    the Hugging Face vocabulary has '▁' runs merged by BPE, shorter runs first (runs longer than
    the longest piece split into 16s); such pieces become normal pieces that outrank every
    other merge, so ids equal `transformers`' on the same file.
    """
    from sentencepiece import sentencepiece_model_pb2 as spm

    tokens = metadata["tokenizer.ggml.tokens"]
    scores = np.asarray(metadata.get("tokenizer.ggml.scores", np.zeros(len(tokens))), np.float32)
    if len(scores) != len(tokens):
        raise ValueError(f"{source}: {len(scores)} token scores for {len(tokens)} tokens.")
    types = _token_types(metadata, len(tokens))
    unknown_id = int(metadata.get("tokenizer.ggml.unknown_token_id", 0))
    types = types.copy()
    types[types == UNKNOWN] = CONTROL
    types[unknown_id] = UNKNOWN  # SentencePiece needs exactly one unknown piece
    model = spm.ModelProto()
    seen = {}
    top = float(scores.max(initial=0.0)) + 1000.0
    rows = zip(tokens, scores.tolist(), types.tolist(), strict=True)
    for index, (token, score, kind) in enumerate(rows):
        piece = token.replace(" ", SPACE_MARK)
        if " " in token and kind in (NORMAL, USER_DEFINED) and not piece.strip(SPACE_MARK):
            kind, score = NORMAL, top - len(piece)
        if piece in seen:
            raise ValueError(f"{source}: the vocabulary holds {token!r} twice (ids "
                             f"{seen[piece]} and {index}).")
        seen[piece] = index
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind
    trainer = model.trainer_spec
    trainer.model_type = spm.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = bool((types == BYTE).any())
    trainer.unk_id = unknown_id
    trainer.unk_piece = tokens[unknown_id]
    for field in ("bos", "eos", "pad"):
        token_id = metadata.get(f"tokenizer.ggml.{field}_token_id")
        setattr(trainer, f"{field}_id", -1 if token_id is None else int(token_id))
        if token_id is not None:
            setattr(trainer, f"{field}_piece", tokens[int(token_id)].replace(" ", SPACE_MARK))
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()


def byte_pair_vocabulary(metadata: dict, source: str) -> tuple[dict, list[str], list[str]]:
    """(vocabulary, merges, special tokens) of a byte-level BPE vocabulary."""
    tokens = metadata["tokenizer.ggml.tokens"]
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        raise ValueError(f"{source}: a 'gpt2' GGUF tokenizer needs tokenizer.ggml.merges.")
    vocabulary = {}
    for index, token in enumerate(tokens):
        vocabulary.setdefault(token, index)
    types = _token_types(metadata, len(tokens))
    special = [tokens[i] for i in np.flatnonzero((types == CONTROL) | (types == USER_DEFINED))]
    return vocabulary, list(merges), special
