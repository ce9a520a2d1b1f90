"""Argument checks shared by every public entry point: each raises a `ValueError` or
`TypeError` that names the argument and shows the value received.

Example:
>>> positive_int(3, "max_length")
3
>>> finite_number(float("nan"), "temperature")
Traceback (most recent call last):
...
ValueError: `temperature` must be a finite number. Received: temperature=nan
"""

import json
import math
import os

import numpy as np


def _show(name: str, value) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{name}={text}"


def positive_int(value, name: str, *, allow_none: bool = False):
    """`value` as an int > 0 (None passes when `allow_none`)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        kind = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"`{name}` must be {kind}. Received: {_show(name, value)}")
    return int(value)


def finite_number(value, name: str, *, low=None, high=None, low_open=False,
                  allow_none: bool = False):
    """`value` as a finite float, optionally within `[low, high]` (`(low, high]` if
    `low_open`)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number. Received: {_show(name, value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {_show(name, value)}")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        left = "(" if low_open else "["
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"`{name}` must be in {bounds}. Received: {_show(name, value)}")
    return value


def token_id(value, name: str, vocabulary_size: int) -> int:
    """`value` as a token id in `[0, vocabulary_size)`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must hold int token ids. Received: {_show(name, value)}")
    if not 0 <= int(value) < vocabulary_size:
        raise ValueError(
            f"`{name}` holds token id {int(value)}, outside the vocabulary "
            f"[0, {vocabulary_size})."
        )
    return int(value)


def token_id_array(ids: np.ndarray, name: str, vocabulary_size: int) -> None:
    """Every id of an integer array lies in `[0, vocabulary_size)`."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocabulary_size):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(
            f"`{name}` holds token id {bad}, outside the vocabulary [0, {vocabulary_size})."
        )


def utf8_text(value, name: str) -> str:
    """A `str` (or UTF-8 `bytes`) that encodes as UTF-8: no lone surrogates."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"`{name}` is not valid UTF-8 ({error.reason} at byte {error.start}). "
                f"Received: {_show(name, value)}"
            ) from None
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string. Received: {_show(name, value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"`{name}` holds a character that is not valid Unicode text ({error.reason} at "
            f"index {error.start}). Received: {_show(name, value)}"
        ) from None
    return value


def read_json_file(path: str, what: str = "file"):
    """Parse a JSON file; a missing, unreadable or malformed file raises a ValueError that
    names it."""
    if not os.path.isfile(path):
        raise ValueError(f"The {what} is missing: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"The {what} is not valid JSON: {path}: {error}") from None
    except OSError as error:
        raise ValueError(f"Cannot read the {what} {path}: {error.strerror}") from None


def json_object(data, path: str, what: str = "file", required=()) -> dict:
    """`data` read from `path` is a JSON object holding every key of `required`."""
    if not isinstance(data, dict):
        raise ValueError(
            f"The {what} {path} must hold a JSON object; it holds a {type(data).__name__}."
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"The {what} {path} lacks the key(s) {missing}.")
    return data
