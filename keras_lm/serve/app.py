"""An OpenAI-compatible HTTP API on FastAPI: /v1/completions, /v1/chat/completions (with
`stream: true` as server-sent events), /v1/models and /health.

Example:
>>> app = create_app(lm, "gemma3_270m")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

import asyncio
import hmac
import json

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
               max_prompt_tokens: int | None = None, max_tokens_limit: int = 4096):
    """The FastAPI application serving `lm` under the name `model_name`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    if lm.preprocessor is None:
        raise ValueError("Serving needs a model with a preprocessor (a tokenizer).")
    worker = GenerationWorker(lm, max_queue=max_queue)
    created = protocol.now()

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown()  # waiting requests get an error; the running one stops

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
        return {"status": "ok", "queued": worker.jobs.qsize()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": created, "owned_by": "keras-lm"}]}

    def check_model(name):
        if name not in (None, model_name):
            raise RequestError(404, f"The model {name!r} does not exist; this server serves "
                                    f"{model_name!r}.", param="model", code="model_not_found")

    def job_for(body, prompt_ids) -> Job:
        if body.n != 1:
            raise RequestError(400, "`n` > 1 is not supported yet.", param="n")
        if body.logprobs not in (None, False):
            raise RequestError(400, "`logprobs` is not supported yet.", param="logprobs")
        if max_prompt_tokens is not None and len(prompt_ids) > max_prompt_tokens:
            raise RequestError(400, f"The prompt has {len(prompt_ids)} tokens; the limit is "
                                    f"{max_prompt_tokens}.", code="context_length_exceeded")
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        if max_tokens > max_tokens_limit:
            raise RequestError(400, f"`max_tokens` is at most {max_tokens_limit} here.",
                               param="max_tokens")
        vocabulary = lm.backbone.vocabulary_size
        if body.logit_bias and any(i >= vocabulary for i in body.logit_bias):
            raise RequestError(400, f"`logit_bias` names token ids beyond the vocabulary "
                                    f"({vocabulary}).", param="logit_bias")
        options = {}
        if body.presence_penalty:
            options["presence_penalty"] = body.presence_penalty
        if body.frequency_penalty:
            options["frequency_penalty"] = body.frequency_penalty
        if body.logit_bias:
            options["logit_bias"] = body.logit_bias
        if body.min_p:
            options["min_p"] = body.min_p
        sampler = worker.sampler(body.temperature, body.top_p, body.top_k, body.seed)
        return Job(prompt_ids=prompt_ids, max_tokens=max_tokens, options=options,
                   sampler=sampler, stop_strings=body.stop, loop=asyncio.get_running_loop())

    def start(job: Job) -> None:
        try:
            worker.submit(job)
        except QueueFull:
            raise RequestError(429, "Too many requests are waiting; retry later.",
                               "rate_limit_error") from None
        except ShuttingDown:
            raise RequestError(503, "The server is shutting down.", "server_error") from None

    async def collect(job: Job):
        """(text, finish_reason, completion_tokens) of a whole job."""
        pieces = []
        try:
            while True:
                event = await job.events.get()
                if event[0] == "text":
                    pieces.append(event[1])
                elif event[0] == "done":
                    return "".join(pieces), event[1], event[2]
                else:
                    status, kind = event[2], "invalid_request_error" if event[2] == 400 \
                        else "server_error"
                    raise RequestError(status, event[1], kind)
        finally:
            job.cancel()  # a client that went away frees the model at the next chunk

    def sse(data) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def stream_events(job: Job, chunk, first=None):
        """Server-sent events: `chunk(text, finish_reason)` per piece, then [DONE]."""
        try:
            if first is not None:
                yield sse(first)
            while True:
                event = await job.events.get()
                if event[0] == "text":
                    yield sse(chunk(event[1], None))
                elif event[0] == "done":
                    yield sse(chunk("", event[1]))
                    break
                else:
                    yield sse(protocol.error_body(event[1], "server_error"))
                    break
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
        request_id, model = protocol.new_id("cmpl"), model_name
        rows = lm.preprocessor.prompt_rows(prompts)
        if body.stream:
            job = job_for(body, rows[0])
            start(job)

            def chunk(text, finish):
                return {"id": request_id, "object": "text_completion",
                        "created": protocol.now(), "model": model,
                        "choices": [{"text": text, "index": 0, "logprobs": None,
                                     "finish_reason": finish}]}

            return StreamingResponse(stream_events(job, chunk), media_type="text/event-stream")
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            job = job_for(body, row)
            start(job)
            text, finish, count = await collect(job)
            choices.append({"text": (prompt + text) if body.echo else text, "index": index,
                            "logprobs": None, "finish_reason": finish})
            prompt_tokens += len(row)
            completion_tokens += count
        return {"id": request_id, "object": "text_completion", "created": protocol.now(),
                "model": model, "choices": choices,
                "usage": protocol.usage(prompt_tokens, completion_tokens)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: protocol.ChatCompletionRequest):
        check_model(body.model)
        if body.response_format and body.response_format.get("type") not in (None, "text"):
            raise RequestError(400, "`response_format` (structured output) is not supported "
                                    "yet.", param="response_format")
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        try:
            ids = lm.preprocessor.chat_prompt_ids(messages, tools=body.tools)
        except ValueError as error:  # the chat template refuses the conversation
            raise RequestError(400, str(error), param="messages") from None
        job = job_for(body, ids)
        start(job)
        request_id = protocol.new_id("chatcmpl")
        if body.stream:
            def chunk(text, finish):
                delta = {"content": text} if finish is None else {}
                return {"id": request_id, "object": "chat.completion.chunk",
                        "created": protocol.now(), "model": model_name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            first = {"id": request_id, "object": "chat.completion.chunk",
                     "created": protocol.now(), "model": model_name,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}]}
            return StreamingResponse(stream_events(job, chunk, first),
                                     media_type="text/event-stream")
        text, finish, count = await collect(job)
        return {"id": request_id, "object": "chat.completion", "created": protocol.now(),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": protocol.usage(len(ids), count)}

    return app
