"""Chat templates: the Jinja2 programs checkpoints carry to turn messages into a prompt,
rendered the way `transformers`' `apply_chat_template` renders them (same environment
options, `raise_exception`, `strftime_now`, `tojson`), in Jinja2's sandbox, with a time
and size limit so that a bad template is an error, never a hang."""

import datetime
import functools
import json
import sys
import time

DEFAULT_TIME_LIMIT = 5.0  # seconds
MAX_OUTPUT_CHARS = 4_000_000


class ChatTemplateError(ValueError):
    """A chat template that cannot be compiled, raises, breaks the sandbox or a limit."""


def _raise_exception(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(format_string: str) -> str:
    return datetime.datetime.now().strftime(format_string)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Like `transformers`: non-ASCII kept, and a `| safe`-free string (no HTML escaping).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def compile_template(source: str):
    """The compiled template (cached by its text); a syntax error is a `ChatTemplateError`."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not isinstance(source, str) or not source.strip():
        raise ChatTemplateError("A chat template must be a non-empty string.")
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(
            f"The chat template has a syntax error on line {error.lineno}: {error.message}"
        ) from None


def render_chat_template(source: str, messages, *, add_generation_prompt: bool = False,
                         tools=None, documents=None, time_limit: float = DEFAULT_TIME_LIMIT,
                         **variables) -> str:
    """Render `messages` (`[{"role": ..., "content": ...}, ...]`) with the template `source`.

    `variables` are the template's other inputs: the tokenizer's special tokens
    (`bos_token`, `eos_token`, ...) and anything the template reads (`date_string`, ...).

    Example:
    >>> render_chat_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\\n"
    ...                      "{% endfor %}", [{"role": "user", "content": "hi"}])
    'user: hi\\n'
    """
    import jinja2
    from jinja2.sandbox import SecurityError

    template = compile_template(source)
    check_messages(messages)
    context = dict(variables, messages=messages, add_generation_prompt=add_generation_prompt)
    if tools is not None:
        context["tools"] = tools
    if documents is not None:
        context["documents"] = documents
    deadline = time.monotonic() + time_limit
    pieces, size = [], 0
    with _deadline(deadline):
        try:
            for piece in template.generate(**context):
                pieces.append(piece)
                size += len(piece)
                if size > MAX_OUTPUT_CHARS:
                    raise ChatTemplateError(
                        f"The chat template produced more than {MAX_OUTPUT_CHARS} characters "
                        "(a loop that does not end?)."
                    )
        except ChatTemplateError:
            raise
        except _TimeUp:
            raise ChatTemplateError(
                f"The chat template did not finish within {time_limit:g} s (a loop that does "
                "not end?)."
            ) from None
        except SecurityError as error:
            raise ChatTemplateError(
                f"The chat template tried something the sandbox forbids: {error}"
            ) from None
        except jinja2.TemplateError as error:  # raise_exception(...) and undefined errors
            raise ChatTemplateError(f"The chat template refused the messages: {error}") \
                from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError,
                ZeroDivisionError, OverflowError) as error:
            raise ChatTemplateError(
                f"The chat template failed on these messages: {type(error).__name__}: {error}"
            ) from None
    return "".join(pieces)


def check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("`messages` must be a non-empty list of {'role': ..., 'content': ...} "
                         f"dicts. Received: {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"`messages[{i}]` must be a dict with a string 'role'. "
                             f"Received: {message!r}")


class _TimeUp(Exception):
    pass


class _deadline:
    """Raise `_TimeUp` inside the rendering code once `deadline` passes: templates compile to
    Python, so tracing the template's frames line by line sees every loop."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.previous = None

    def __enter__(self):
        self.previous = sys.gettrace()
        deadline = self.deadline

        def local_trace(frame, event, arg):
            if time.monotonic() > deadline:
                raise _TimeUp()
            return local_trace

        def global_trace(frame, event, arg):
            if time.monotonic() > deadline:
                raise _TimeUp()
            # Line events only in the template's own code (Jinja names it "<template>").
            return local_trace if frame.f_code.co_filename == "<template>" else None

        sys.settrace(global_trace)
        return self

    def __exit__(self, *exc):
        sys.settrace(self.previous)
        return False
