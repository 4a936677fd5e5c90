"""The server's scheduler: one thread owns the model and decodes every admitted request together.

Contract: requests arrive as Jobs (a Generation and a thread-safe event sink); each step the scheduler
drops jobs whose client left, admits queued jobs into free slots, and runs one Decoder step over all of
them (continuous batching). A cancelled job stops costing anything within one step, queued or running,
and queue limits count live jobs only. No web framework is imported here.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Union

from ..errors import Error
from ..generation import Decoder, Generation, TokenLogprob

log = logging.getLogger("llama32_native.server")

__all__ = ["Job", "Scheduler", "SchedulerStats", "QueueFullError", "ShuttingDownError", "TextEvent", "DoneEvent",
           "ErrorEvent", "Event"]


class QueueFullError(Error, RuntimeError):
    """The scheduler's wait queue is full (HTTP 429)."""


class ShuttingDownError(Error, RuntimeError):
    """The scheduler is stopping or dead (HTTP 503)."""


@dataclasses.dataclass
class TextEvent:
    """New output of one choice: text, the tokens behind it and their logprobs (when asked for)."""

    index: int
    text: str
    tokens: list[int]
    logprobs: list[TokenLogprob] | None = None


@dataclasses.dataclass
class DoneEvent:
    index: int
    finish_reason: str
    n_prompt: int
    n_completion: int


@dataclasses.dataclass
class ErrorEvent:
    index: int
    message: str


Event = Union[TextEvent, DoneEvent, ErrorEvent]


@dataclasses.dataclass(eq=False)
class Job:
    """One sequence to generate for a request, and where its events go (a thread-safe sink)."""

    generation: Generation
    sink: Callable[[Event], None]
    index: int = 0
    prompt_index: int = 0
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def n_prompt(self) -> int:
        return len(self.generation.prompt)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclasses.dataclass
class SchedulerStats:
    forward_calls: int = 0  # batched forwards: prefill rows of new requests ride in the same step as decodes
    tokens_generated: int = 0
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    max_batch: int = 0
    max_queue_depth: int = 0
    drafts_proposed: int = 0  # speculative decoding: draft tokens verified, and accepted
    drafts_accepted: int = 0

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens_generated / self.forward_calls if self.forward_calls else 0.0

    @property
    def acceptance(self) -> float:
        return self.drafts_accepted / self.drafts_proposed if self.drafts_proposed else 0.0


class Scheduler:
    """Owns the model; admits queued jobs into free slots and decodes all active ones per step."""

    def __init__(self, model: Any, max_queue: int = 64, max_batch: int | None = None):
        self.model = model
        slots = model.max_sequences
        self.capacity = slots if max_batch is None else min(max_batch, slots)
        if self.capacity < 1:
            raise ValueError("the model has no sequence slot")
        self.max_queue = max_queue
        self.stats = SchedulerStats()
        self._decoder = Decoder(model)
        self._cv = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._active: dict[Generation, Job] = {}
        self._stopping = False
        self._dead: str | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llama32-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every queued and active job, then join the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self._dead is None and self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def error(self) -> str | None:
        """Why the scheduler thread died, if it did."""
        return self._dead

    @property
    def queue_depth(self) -> int:
        return sum(1 for j in self._pending if not j.cancelled.is_set())

    @property
    def active_count(self) -> int:
        return len(self._active)

    def submit(self, jobs: Iterable[Job]) -> None:
        """Queue jobs together (all or none); QueueFullError when they do not fit, ShuttingDownError if stopping."""
        jobs = list(jobs)
        with self._cv:
            if self._stopping or self._dead is not None:
                raise ShuttingDownError(self._dead or "the server is shutting down")
            self._purge_cancelled()
            if len(self._pending) + len(jobs) > self.max_queue:
                raise QueueFullError(f"the request queue is full ({self.max_queue} waiting)")
            self._pending.extend(jobs)
            self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(self._pending))
            self._cv.notify_all()

    def wake(self) -> None:
        """Make the loop look at cancellations now (a client left while nothing else was happening)."""
        with self._cv:
            self._cv.notify_all()

    # -------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stopping and not self._pending and not self._active:
                        self._cv.wait()
                    if self._stopping:
                        break
                    self._purge_cancelled()
                    new = self._take_pending()
                self._drop_cancelled()
                for job in new:
                    self._decoder.add(job.generation)
                    self._active[job.generation] = job
                if self._active:
                    self._step()
        except BaseException as e:  # a bug or a dead engine: say so on /health, fail every request
            self._dead = f"the scheduler stopped: {type(e).__name__}: {e}"
            log.exception("scheduler thread died")
        finally:
            with self._cv:
                self._stopping = True
                doomed = list(self._pending) + list(self._active.values())
                self._pending.clear()
                self._active.clear()
            self._decoder.close()
            for job in doomed:
                self._emit(job, ErrorEvent(job.index, self._dead or "the server is shutting down"))

    def _purge_cancelled(self) -> None:
        live = [j for j in self._pending if not j.cancelled.is_set()]
        self.stats.requests_cancelled += len(self._pending) - len(live)
        self._pending = collections.deque(live)

    def _take_pending(self) -> list[Job]:
        new: list[Job] = []
        room = min(self.capacity - len(self._active), self.model.free_slots)
        while self._pending and len(new) < room:
            new.append(self._pending.popleft())
        return new

    def _drop_cancelled(self) -> None:
        for gen, job in list(self._active.items()):
            if job.cancelled.is_set():
                self._decoder.cancel(gen)
                del self._active[gen]
                self.stats.requests_cancelled += 1

    def _step(self) -> None:
        self.stats.max_batch = max(self.stats.max_batch, len(self._active))
        updates = self._decoder.step()
        self.stats.forward_calls += 1
        for gen, upd in updates:
            job = self._active.get(gen)
            if job is None:
                continue
            self.stats.tokens_generated += len(upd.tokens)
            if upd.text or upd.tokens:
                self._emit(job, TextEvent(job.index, upd.text, list(upd.tokens), upd.logprobs))
            if upd.finish_reason is None:
                continue
            del self._active[gen]
            drafts = gen.proposer.stats() if hasattr(gen.proposer, "stats") else None
            if drafts is not None:
                self.stats.drafts_proposed += drafts["proposed"]
                self.stats.drafts_accepted += drafts["accepted"]
            if upd.error is not None:
                self.stats.requests_failed += 1
                self._emit(job, ErrorEvent(job.index, str(upd.error)))
            else:
                self.stats.requests_done += 1
                self._emit(job, DoneEvent(job.index, upd.finish_reason, job.n_prompt, len(gen.tokens)))

    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.sink(event)
        except Exception:  # the client's event loop is gone
            job.cancel()
