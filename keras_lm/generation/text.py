"""Text-level controls on top of token generation: stop strings and streaming pieces."""

REPLACEMENT = "\ufffd"  # what a decoder emits for an incomplete UTF-8 sequence


class RowText:
    """The generated text of one row, decoded incrementally in the prompt's context.

    Decoding prompt + completion and removing the prompt's text keeps leading spaces right for
    SentencePiece; `stable()` holds back a trailing partial UTF-8 character.
    """

    def __init__(self, decode, prompt_ids, special_ids):
        self._decode = decode
        self._special = set(special_ids)
        self._prompt = [int(t) for t in prompt_ids if int(t) not in self._special]
        self._prefix = decode(self._prompt)
        self.tokens = []
        self.text = ""
        self.emitted = 0

    def _completion_text(self, tokens):
        kept = [t for t in tokens if t not in self._special]
        full = self._decode(self._prompt + kept)
        if full.startswith(self._prefix):
            return full[len(self._prefix) :]
        return self._decode(kept)

    def extend(self, tokens) -> None:
        self.tokens.extend(int(t) for t in tokens)
        self.text = self._completion_text(self.tokens)

    def stable(self) -> str:
        return self.text.rstrip(REPLACEMENT)

    def take_new(self) -> str:
        """Text not yet handed out, up to the last complete character."""
        stable = self.stable()
        piece = stable[self.emitted :]
        self.emitted = max(self.emitted, len(stable))
        return piece

    def cut_at_stop(self, stop_strings) -> bool:
        """If a stop string occurs, keep the fewest tokens whose text contains it and cut the
        text just after it. Returns True when a stop string was found."""
        end = first_stop_end(self.text, stop_strings)
        if end is None:
            return False
        for count in range(1, len(self.tokens) + 1):
            if len(self._completion_text(self.tokens[:count])) >= end:
                self.tokens = self.tokens[:count]
                break
        self.text = self.text[:end]
        self.emitted = min(self.emitted, end)
        return True


def first_stop_end(text: str, stop_strings) -> int | None:
    """End index of the earliest-ending stop string in `text`, or None."""
    ends = []
    for stop in stop_strings:
        position = text.find(stop)
        if position >= 0:
            ends.append(position + len(stop))
    return min(ends) if ends else None


def normalize_stop_strings(stop_strings) -> tuple:
    if stop_strings is None:
        return ()
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    stops = tuple(stop_strings)
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError(
            f"`stop_strings` must be a non-empty string or a list of them. Received: {stops!r}"
        )
    return stops
