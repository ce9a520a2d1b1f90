"""The generation worker behind the HTTP server: one thread runs the model with continuous
batching (`keras_lm.generation.batcher`); requests wait in a bounded queue, join the running
batch between decode chunks and leave it when they finish, and each one's text reaches its
request's event loop as it is generated.
"""

import asyncio
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from keras_lm.generation.batcher import BatchRequest, ContinuousBatcher
from keras_lm.generation.grammar import new_matcher
from keras_lm.generation.row_sampling import RowSettings
from keras_lm.generation.text import RowText

log = logging.getLogger("keras_lm.serve")


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new requests."""


@dataclass
class Job:
    """One request: prompt ids, `n` choices to generate and their settings. Events go to
    `loop`'s `events` queue: `("text", choice, text, logprob entries)`, then per choice
    `("done", choice, finish_reason, completion_tokens)`, or `("error", message, status)`."""

    prompt_ids: np.ndarray
    max_tokens: int
    settings: RowSettings
    stop_strings: list | None
    loop: asyncio.AbstractEventLoop
    n: int = 1
    top_log_probs: int | None = None  # None: no log-probs; else alternatives per token
    grammar: str | None = None  # structured output: each choice follows this grammar
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, *event) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Row:
    """A choice of a job while it holds a batch slot."""

    job: Job
    choice: int
    text: RowText
    tokens: int = 0


class GenerationWorker:
    """Runs `Job`s on `lm` in a daemon thread, up to `slots` sequences at once."""

    def __init__(self, lm, max_queue: int = 64, slots: int = 8, chunk_size: int = 8,
                 prefix_cache_bytes: int = 256 << 20):
        self.lm = lm
        self.tokenizer = lm.preprocessor.tokenizer
        self.batcher = ContinuousBatcher(lm, slots=slots, chunk_size=chunk_size,
                                         prefix_cache_bytes=prefix_cache_bytes)
        self.stop_ids = set(self.tokenizer.generation_stop_ids())
        self.special = {self.tokenizer.start_token_id, self.tokenizer.end_token_id} - {None}
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.closing = False
        self.rows: dict = {}
        self.waiting: deque = deque()  # (job, choice) taken from the queue, not yet admitted
        self.thread = threading.Thread(target=self._run, name="keras-lm-generation",
                                       daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        if self.closing:
            raise ShuttingDown()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None

    def load(self) -> dict:
        return {"queued": self.jobs.qsize() + len(self.waiting), "running": len(self.rows),
                "slots": self.batcher.slots}

    def shutdown(self) -> None:
        """Take no more jobs; end the waiting and running ones with an error."""
        self.closing = True
        self.jobs.put(None)
        self.thread.join(timeout=30)

    # -- the generation thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._admit():
                return
            if not self.rows:
                continue
            try:
                outputs = self.batcher.step()
            except Exception as error:  # a bug must not stop the server: fail the batch
                log.exception("decode step failed")
                for handle in list(self.rows):
                    self._end(handle, error=(f"{type(error).__name__}: {error}", 500))
                continue
            for handle, output in outputs.items():
                self._deliver(handle, output)

    def _admit(self) -> bool:
        """Take queued jobs and give their choices free slots; False once shutting down."""
        while True:
            self._drop_cancelled()
            while self.waiting and self.batcher.free_slots():
                job, choice = self.waiting.popleft()
                if not job.cancelled.is_set():
                    self._start(job, choice)
            if self.waiting and not self.batcher.free_slots():
                return True
            idle = not self.rows and not self.waiting
            try:
                job = self.jobs.get(block=idle)
            except queue.Empty:
                return True
            if job is None:
                self._close()
                return False
            self.waiting.extend((job, choice) for choice in range(job.n))

    def _start(self, job: Job, choice: int) -> None:
        settings = job.settings
        if choice:  # each choice draws its own numbers
            settings = replace(settings, seed=settings.seed + 7919 * choice)
        try:
            matcher = None
            if job.grammar is not None:
                matcher = new_matcher(self.tokenizer, self.lm.backbone.vocabulary_size,
                                      self.batcher.stop_ids[self.batcher.stop_ids >= 0],
                                      job.grammar)
            request = BatchRequest(job.prompt_ids, job.max_tokens, settings,
                                   job.top_log_probs or 0, matcher)
            handle = self.batcher.add(request)
        except ValueError as error:  # the request's own fault
            job.cancel()
            job.emit("error", str(error), 400)
            return
        except Exception as error:
            log.exception("prefill failed")
            job.cancel()
            job.emit("error", f"{type(error).__name__}: {error}", 500)
            return
        self.rows[handle] = _Row(job, choice, RowText(self.tokenizer._decode, job.prompt_ids,
                                                    self.special))

    def _deliver(self, handle, output) -> None:
        row = self.rows[handle]
        if row.job.cancelled.is_set():  # the client went away: free the slot
            self._end(handle)
            return
        tokens = output.tokens
        stop_token = output.finished and bool(tokens) and tokens[-1] in self.stop_ids
        row.tokens += len(tokens)
        before = len(row.text.tokens)
        row.text.extend(tokens[:-1] if stop_token else tokens)
        stopped = bool(row.job.stop_strings) and row.text.cut_at_stop(row.job.stop_strings)
        kept = max(0, len(row.text.tokens) - before)
        entries = None
        if row.job.top_log_probs is not None:
            entries = [self._log_prob_entry(t, lp, top) for t, lp, top in zip(
                row.text.tokens[before:], output.log_probs[:kept],
                output.top[:kept] or [None] * kept, strict=False)]
        finished = stopped or output.finished
        piece = row.text.take_new()
        if finished:
            piece += row.text.text[row.text.emitted:]
        if piece or entries:
            row.job.emit("text", row.choice, piece, entries)
        if finished:
            if stopped:
                row.tokens = len(row.text.tokens)
            reason = "stop" if stopped or stop_token else "length"
            self._end(handle, reason=reason)

    def _log_prob_entry(self, token: int, log_prob: float, top) -> dict:
        text = self.tokenizer.detokenize([token])
        entry = {"token": text, "logprob": float(log_prob), "bytes": list(text.encode()),
                 "top_logprobs": []}
        if top is not None:
            for token_id, value in zip(*top, strict=True):
                other = self.tokenizer.detokenize([token_id])
                entry["top_logprobs"].append({"token": other, "logprob": float(value),
                                              "bytes": list(other.encode())})
        return entry

    def _end(self, handle, reason: str | None = None, error=None) -> None:
        row = self.rows.pop(handle)
        self.batcher.release(handle)
        if error is not None:
            row.job.cancel()
            row.job.emit("error", *error)
        elif reason is not None:
            row.job.emit("done", row.choice, reason, row.tokens)

    def _drop_cancelled(self) -> None:
        for handle, row in list(self.rows.items()):
            if row.job.cancelled.is_set():
                self._end(handle)

    def _close(self) -> None:
        for handle in list(self.rows):
            self._end(handle, error=("The server is shutting down.", 503))
        pending = [job for job, _ in self.waiting]
        while True:
            try:
                pending.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        for job in dict.fromkeys(j for j in pending if j is not None):
            job.emit("error", "The server is shutting down.", 503)
        self.waiting.clear()
