"""Structured output: a JSON schema (or "any JSON object") turned into a mask of the tokens
allowed next, step by step, by llguidance (`pip install llguidance`).

Each constrained sequence gets a matcher; before every step the batcher asks it which tokens
may follow and forbids the others, and after the step feeds it the chosen token. When the
grammar is complete only the stop tokens remain allowed, so generation ends there.

Example:
>>> grammar = json_grammar({"type": "object", "properties": {"a": {"type": "integer"}}})
>>> matcher = new_matcher(lm.preprocessor.tokenizer, 50257, (50256,), grammar)  # doctest: +SKIP
>>> allowed_tokens(matcher, 50257).sum()  # doctest: +SKIP
"""

import re

import numpy as np

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPECIAL_MARKER = b"\xff"  # how llguidance tells special tokens from text


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise ImportError(
            "Structured output (`json_schema`, `response_format`) needs llguidance: "
            "pip install llguidance"
        ) from None
    return llguidance


def json_grammar(schema: dict | None) -> str:
    """The grammar of JSON texts valid against `schema` (None: any JSON object); a
    ValueError names what is wrong with a schema that cannot be compiled."""
    llguidance = _llguidance()
    if schema is not None and not isinstance(schema, dict):
        raise ValueError(f"A JSON schema must be a dict; got {type(schema).__name__}.")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            {"type": "object"} if schema is None else schema,
            defaults={"whitespace_flexible": False})
    except ValueError as error:
        raise ValueError(f"Invalid JSON schema: {error}") from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise ValueError(f"Unsupported JSON schema: {messages[0]}")
    return grammar


def new_matcher(tokenizer, vocabulary_size: int, stop_ids, grammar: str):
    """A fresh matcher of `grammar` over `tokenizer`'s tokens."""
    llguidance = _llguidance()
    stop_ids = tuple(int(i) for i in stop_ids)
    matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer, vocabulary_size, stop_ids),
                                   grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(f"The grammar cannot be used: {matcher.get_error()}")
    return matcher


def allowed_tokens(matcher, vocabulary_size: int) -> np.ndarray:
    """`[vocabulary_size]` bool: the tokens `matcher` allows next."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    allowed = np.unpackbits(bits, bitorder="little")[:vocabulary_size].astype(bool)
    if len(allowed) < vocabulary_size:
        allowed = np.pad(allowed, (0, vocabulary_size - len(allowed)))
    return allowed


def _ll_tokenizer(tokenizer, vocabulary_size: int, stop_ids: tuple):
    """llguidance's view of `tokenizer` (built once per tokenizer: ~1 s on 256k tokens)."""
    cache = tokenizer.__dict__.setdefault("_llguidance", {})
    key = (vocabulary_size, stop_ids)
    if key not in cache:
        llguidance = _llguidance()
        eos = list(stop_ids) or None
        backend = getattr(tokenizer, "_backend", None)
        if backend is not None:  # a `tokenizers` tokenizer: llguidance reads its JSON
            made = llguidance.LLTokenizer(backend.to_str(), n_vocab=vocabulary_size,
                                          eos_token=eos)
        else:
            made = llguidance.LLTokenizer(
                llguidance.TokenizerWrapper(_PieceTokens(tokenizer, vocabulary_size, stop_ids)),
                n_vocab=vocabulary_size, eos_token=eos)
        cache[key] = made
    return cache[key]


class _PieceTokens:
    """The bytes of each SentencePiece token, in the shape `llguidance.TokenizerWrapper`
    reads."""

    def __init__(self, tokenizer, vocabulary_size: int, stop_ids: tuple):
        self._tokenizer = tokenizer
        special = set(tokenizer.special_token_ids) | set(stop_ids)
        limit = tokenizer.id_limit()
        self.tokens = []
        for i in range(vocabulary_size):
            piece = tokenizer.id_to_token(i) if i < limit else ""
            byte = _BYTE_PIECE.match(piece)
            if i in special or i >= limit:
                self.tokens.append(_SPECIAL_MARKER + piece.encode())
            elif byte:
                self.tokens.append(bytes([int(byte.group(1), 16)]))
            else:
                self.tokens.append(piece.replace("\u2581", " ").encode())
        self.special_token_ids = sorted(i for i in special if i < vocabulary_size)
        self.eos_token_id = stop_ids[0] if stop_ids else tokenizer.end_token_id
        self.bos_token_id = tokenizer.start_token_id

    def __call__(self, text):
        if isinstance(text, bytes):
            raise TypeError("takes str")
        return [int(i) for i in self._tokenizer._encode([text])[0]]
