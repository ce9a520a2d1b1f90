"""An OpenAI-compatible HTTP API on FastAPI: /v1/completions, /v1/chat/completions (with
`stream: true` as server-sent events), /v1/models and /health.

Example:
>>> app = create_app(lm, "gemma3_270m")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

import asyncio
import hmac
import json
import secrets

from keras_lm.generation.grammar import json_grammar
from keras_lm.generation.row_sampling import RowSettings
from keras_lm.serve import protocol
from keras_lm.serve.worker import GenerationWorker, Job, QueueFull, ShuttingDown


class RequestError(Exception):
    """A request we refuse: an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = protocol.error_body(message, kind, param, code)


def create_app(lm, model_name: str, api_key: str | None = None, max_queue: int = 64,
               max_prompt_tokens: int | None = None, max_tokens_limit: int = 4096,
               slots: int = 8, prefix_cache_bytes: int = 256 << 20, max_choices: int = 16):
    """The FastAPI application serving `lm` under the name `model_name`, decoding up to
    `slots` sequences together."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    if lm.preprocessor is None:
        raise ValueError("Serving needs a model with a preprocessor (a tokenizer).")
    worker = GenerationWorker(lm, max_queue=max_queue, slots=slots,
                              prefix_cache_bytes=prefix_cache_bytes)
    created = protocol.now()

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown()  # whatever is still waiting or running gets an error

    app = FastAPI(title="keras-lm", lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(RequestError)
    async def _refused(request, error: RequestError):
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = first.get("msg", "Invalid request.")
        return JSONResponse(protocol.error_body(f"{'.'.join(location)}: {message}",
                                                param=".".join(location) or None),
                            status_code=400)

    @app.middleware("http")
    async def _check_key(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            expected = f"Bearer {api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse(protocol.error_body(
                    "Invalid or missing API key (send `Authorization: Bearer KEY`).",
                    "authentication_error", code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", **worker.load()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": created, "owned_by": "keras-lm"}]}

    def check_model(name):
        if name not in (None, model_name):
            raise RequestError(404, f"The model {name!r} does not exist; this server serves "
                                    f"{model_name!r}.", param="model", code="model_not_found")

    def job_for(body, prompt_ids, top_log_probs=None) -> Job:
        if body.n > max_choices:
            raise RequestError(400, f"`n` is at most {max_choices} here.", param="n")
        if max_prompt_tokens is not None and len(prompt_ids) > max_prompt_tokens:
            raise RequestError(400, f"The prompt has {len(prompt_ids)} tokens; the limit is "
                                    f"{max_prompt_tokens}.", code="context_length_exceeded")
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        if max_tokens > max_tokens_limit:
            raise RequestError(400, f"`max_tokens` is at most {max_tokens_limit} here.",
                               param="max_tokens")
        backbone = lm.backbone
        if getattr(backbone, "learned_positions", False) and \
                len(prompt_ids) + max_tokens > backbone.max_sequence_length:
            raise RequestError(400, f"The prompt ({len(prompt_ids)} tokens) plus `max_tokens` "
                                    f"({max_tokens}) exceed the model's "
                                    f"{backbone.max_sequence_length} positions.",
                               code="context_length_exceeded")
        vocabulary = backbone.vocabulary_size
        if body.logit_bias and any(i >= vocabulary for i in body.logit_bias):
            raise RequestError(400, f"`logit_bias` names token ids beyond the vocabulary "
                                    f"({vocabulary}).", param="logit_bias")
        try:
            settings = RowSettings(
                temperature=body.temperature, top_k=body.top_k or 0, top_p=body.top_p,
                min_p=body.min_p or 0.0, presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
                logit_bias=tuple(sorted((body.logit_bias or {}).items())),
                seed=secrets.randbits(31) if body.seed is None else body.seed)
        except ValueError as error:
            raise RequestError(400, str(error), param="top_k") from None
        return Job(prompt_ids=prompt_ids, max_tokens=max_tokens, settings=settings,
                   stop_strings=body.stop, loop=asyncio.get_running_loop(), n=body.n,
                   top_log_probs=top_log_probs)

    def response_grammar(response_format) -> str | None:
        """The grammar `response_format` asks for: None for text."""
        kind = (response_format or {}).get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            schema = None
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise RequestError(400, "`response_format.json_schema` must be an object with "
                                        "a `schema`.", param="response_format")
            schema = spec.get("schema", {})
        else:
            raise RequestError(400, f"`response_format.type` {kind!r} is not one of 'text', "
                                    "'json_object', 'json_schema'.", param="response_format")
        try:
            return json_grammar(schema)
        except ImportError as error:
            raise RequestError(400, str(error), param="response_format") from None
        except ValueError as error:
            raise RequestError(400, str(error), param="response_format") from None

    def start(job: Job) -> None:
        try:
            worker.submit(job)
        except QueueFull:
            raise RequestError(429, "Too many requests are waiting; retry later.",
                               "rate_limit_error") from None
        except ShuttingDown:
            raise RequestError(503, "The server is shutting down.", "server_error") from None

    def failure(event) -> RequestError:
        status = event[2]
        return RequestError(status, event[1],
                            "invalid_request_error" if status == 400 else "server_error")

    async def collect(job: Job) -> list:
        """Per choice: `[text, finish_reason, completion_tokens, logprob entries]`."""
        choices = [["", None, 0, [] if job.top_log_probs is not None else None]
                   for _ in range(job.n)]
        try:
            remaining = job.n
            while remaining:
                event = await job.events.get()
                if event[0] == "text":
                    choice = choices[event[1]]
                    choice[0] += event[2]
                    if event[3]:
                        choice[3].extend(event[3])
                elif event[0] == "done":
                    choices[event[1]][1:3] = [event[2], event[3]]
                    remaining -= 1
                else:
                    raise failure(event)
            return choices
        finally:
            job.cancel()  # a client that went away frees its slots at the next chunk

    def sse(data) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def stream_events(job: Job, chunk, first=None, usage=None):
        """Server-sent events: `chunk(choice, text, finish_reason, logprobs)` per piece, then
        `usage(completion_tokens)` when the client asked for it, then [DONE]."""
        try:
            if first is not None:
                for choice in range(job.n):
                    yield sse(first(choice))
            remaining, completion_tokens = job.n, 0
            while remaining:
                event = await job.events.get()
                if event[0] == "text":
                    yield sse(chunk(event[1], event[2], None, event[3]))
                elif event[0] == "done":
                    yield sse(chunk(event[1], "", event[2], None))
                    remaining -= 1
                    completion_tokens += event[3]
                else:
                    yield sse(protocol.error_body(event[1], "server_error"))
                    break
            if usage is not None and not remaining:
                yield sse(usage(completion_tokens))
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    @app.post("/v1/completions")
    async def completions(body: protocol.CompletionRequest):
        check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or any(not isinstance(p, str) for p in prompts):
            raise RequestError(400, "`prompt` must be a string or a list of strings.",
                               param="prompt")
        if body.stream and len(prompts) != 1:
            raise RequestError(400, "Stream one prompt at a time.", param="prompt")
        top = body.logprobs
        if top is not None and (isinstance(top, bool) or not isinstance(top, int)
                                or not 0 <= top <= 5):
            raise RequestError(400, "`logprobs` takes an integer in [0, 5] here.",
                               param="logprobs")
        request_id, model = protocol.new_id("cmpl"), model_name
        rows = lm.preprocessor.prompt_rows(prompts)
        jobs = [job_for(body, row, top) for row in rows]
        if body.stream:
            job = jobs[0]
            start(job)

            def chunk(choice, text, finish, entries):
                return {"id": request_id, "object": "text_completion",
                        "created": protocol.now(), "model": model,
                        "choices": [{"text": text, "index": choice,
                                     "logprobs": protocol.completion_logprobs(entries),
                                     "finish_reason": finish}]}

            def usage(count):
                return {"id": request_id, "object": "text_completion",
                        "created": protocol.now(), "model": model, "choices": [],
                        "usage": protocol.usage(len(rows[0]), count)}

            return StreamingResponse(
                stream_events(job, chunk, usage=usage if body.include_usage else None),
                media_type="text/event-stream")
        for job in jobs:
            start(job)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, (prompt, row, job) in enumerate(zip(prompts, rows, jobs, strict=True)):
            for choice, (text, finish, count, entries) in enumerate(await collect(job)):
                choices.append({"text": (prompt + text) if body.echo else text,
                                "index": index * body.n + choice,
                                "logprobs": protocol.completion_logprobs(entries),
                                "finish_reason": finish})
                completion_tokens += count
            prompt_tokens += len(row)
        return {"id": request_id, "object": "text_completion", "created": protocol.now(),
                "model": model, "choices": choices,
                "usage": protocol.usage(prompt_tokens, completion_tokens)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: protocol.ChatCompletionRequest):
        check_model(body.model)
        grammar = response_grammar(body.response_format)
        if body.logprobs not in (None, True, False):
            raise RequestError(400, "`logprobs` is true or false.", param="logprobs")
        if body.top_logprobs and not body.logprobs:
            raise RequestError(400, "`top_logprobs` needs `logprobs: true`.",
                               param="top_logprobs")
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        try:
            ids = lm.preprocessor.chat_prompt_ids(messages, tools=body.tools)
        except ValueError as error:  # the chat template refuses the conversation
            raise RequestError(400, str(error), param="messages") from None
        job = job_for(body, ids, (body.top_logprobs or 0) if body.logprobs else None)
        job.grammar = grammar
        start(job)
        request_id = protocol.new_id("chatcmpl")
        if body.stream:
            def chunk(choice, text, finish, entries):
                delta = {"content": text} if finish is None else {}
                logprobs = None if entries is None else {"content": entries}
                return {"id": request_id, "object": "chat.completion.chunk",
                        "created": protocol.now(), "model": model_name,
                        "choices": [{"index": choice, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}]}

            def first(choice):
                return {"id": request_id, "object": "chat.completion.chunk",
                        "created": protocol.now(), "model": model_name,
                        "choices": [{"index": choice,
                                     "delta": {"role": "assistant", "content": ""},
                                     "logprobs": None, "finish_reason": None}]}

            def usage(count):
                return {"id": request_id, "object": "chat.completion.chunk",
                        "created": protocol.now(), "model": model_name, "choices": [],
                        "usage": protocol.usage(len(ids), count)}

            return StreamingResponse(
                stream_events(job, chunk, first, usage if body.include_usage else None),
                media_type="text/event-stream")
        choices = await collect(job)
        return {"id": request_id, "object": "chat.completion", "created": protocol.now(),
                "model": model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                             "logprobs": None if entries is None else {"content": entries},
                             "finish_reason": finish}
                            for i, (text, finish, _, entries) in enumerate(choices)],
                "usage": protocol.usage(len(ids), sum(c[2] for c in choices))}

    return app
