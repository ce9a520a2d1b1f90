"""The generation worker behind the HTTP server: one thread runs the model, jobs wait in a
bounded queue, and each job's text reaches its request's event loop as it is generated.

Requests run one after another here (no batching across requests yet).
"""

import asyncio
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from keras_lm import samplers as samplers_lib
from keras_lm.chat.conversation import stream_ids


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new requests."""


@dataclass
class Job:
    """One generation: prompt ids and options; events go to `loop`'s `events` queue as
    `("text", str)`, then `("done", finish_reason, completion_tokens)` or
    `("error", message, http_status)`."""

    prompt_ids: np.ndarray
    max_tokens: int
    options: dict
    sampler: object
    stop_strings: list | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled.set()


class GenerationWorker:
    """Runs `Job`s on `lm`, one at a time, in a daemon thread."""

    def __init__(self, lm, max_queue: int = 64):
        self.lm = lm
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.closing = False
        self._samplers = {}
        self.thread = threading.Thread(target=self._run, name="keras-lm-generation",
                                       daemon=True)
        self.thread.start()

    def sampler(self, temperature: float, top_p: float, top_k: int | None, seed: int | None):
        """A sampler for these settings, reused across requests (a new one would be traced and
        compiled again)."""
        key = (temperature, top_p, top_k, seed)
        if key not in self._samplers:
            if temperature == 0.0:
                made = samplers_lib.GreedySampler()
            elif top_p < 1.0:
                made = samplers_lib.TopPSampler(p=top_p, k=top_k, temperature=temperature,
                                                seed=seed)
            elif top_k is not None:
                made = samplers_lib.TopKSampler(k=top_k, temperature=temperature, seed=seed)
            else:
                made = samplers_lib.RandomSampler(temperature=temperature, seed=seed)
            if len(self._samplers) > 32:
                self._samplers.pop(next(iter(self._samplers)))
            self._samplers[key] = made
        return self._samplers[key]

    def submit(self, job: Job) -> None:
        if self.closing:
            raise ShuttingDown()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None

    def shutdown(self) -> None:
        """Take no more jobs; cancel the waiting ones and the running one."""
        self.closing = True
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            job.emit("error", "The server is shutting down.", 503)
        self.jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            try:
                self._generate(job)
            except (ValueError, TypeError) as error:  # the request's own fault
                job.emit("error", str(error), 400)
            except Exception as error:  # a bug must not stop the worker either
                job.emit("error", f"{type(error).__name__}: {error}", 500)

    def _generate(self, job: Job) -> None:
        stream, pieces = stream_ids(self.lm, job.prompt_ids, job.max_tokens,
                                    sampler=job.sampler, stop_strings=job.stop_strings,
                                    **job.options)
        stop_ids = set(self.lm.preprocessor.tokenizer.generation_stop_ids())
        for piece in pieces:
            if job.cancelled.is_set() or self.closing:
                stream.close()
                return
            job.emit("text", piece)
        completion = stream.completion_ids[0]
        ended = stream.stopped_by_string[0] or (completion and completion[-1] in stop_ids)
        job.emit("done", "stop" if ended else "length", len(completion))
