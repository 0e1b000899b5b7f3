"""Continuous batching: one neutral scheduler over a framework's slot decoder.

A request is ``n`` sequences (its choices). Sequences wait in a FIFO queue until a cache slot
is free; each ``step()``:

1. takes the requests and cancellations other threads handed in (``submit``, ``cancel``);
2. frees the slots of cancelled requests;
3. admits waiting sequences into free slots: runs their prompt (``decoder.prefill``) and picks
   their first token, up to ``prefill_budget`` prompt tokens per step so that running
   sequences are not held up long by a burst of arrivals;
4. runs one decode step over every running sequence (``decoder.decode``), picks each next
   token, and sends each sequence's news to its request's sink;
5. frees the slots of sequences that finished (eos, a stop token or string, ``max_tokens`` or
   the end of the context).

So a new request joins the batch at the next step and a finished one leaves at once. The
decoder is ``gpt2_dual.pt.slots.SlotDecoder`` or ``gpt2_dual.tf.slots.SlotDecoder``; token
choice and text are numpy and Python (``sampler``, ``text``). Only the engine's thread calls
``step``; ``submit``, ``cancel`` and ``stats`` are thread-safe.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpt2_dual.errors import EngineClosedError, QueueFullError
from gpt2_dual.serve.params import SamplingParams
from gpt2_dual.serve.sampler import TokenLogprob, log_softmax, penalize, pick, token_logprob
from gpt2_dual.serve.text import TextStream

logger = logging.getLogger(__name__)

__all__ = ["Event", "Request", "Scheduler", "Stats"]

#: Latency samples kept for ``Stats`` (the most recent ones).
SAMPLES = 10_000


@dataclass
class Event:
    """What a request's sink receives about one of its choices.

    Attributes:
        index: the choice, ``0..n-1``.
        token_ids: new tokens (one, or none on a final event).
        text: new text (stop string and what follows cut; incomplete UTF-8 held back).
        logprobs: one ``TokenLogprob`` per new token when the request asked for logprobs.
        finish_reason: None while running; ``"stop"``, ``"length"`` or ``"abort"`` on the
            choice's last event.
        prompt_logprobs: on a choice's first event, when asked: one per prompt token (the
            first is None).
        stop_reason: the stop string or stop token id that ended the choice (vLLM's field).
        error: on an ``"abort"`` caused by a failure, what failed.
    """

    index: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    stop_reason: int | str | None = None
    error: str | None = None


@dataclass
class Request:
    """A request as the scheduler holds it."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[Event], None]
    max_length: int
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    first_token: float | None = None
    unfinished: int = 0


@dataclass
class Stats:
    """Counters since start, gauges now, recent latency samples (``/metrics``)."""

    requests_total: dict[str, int]
    prompt_tokens_total: int
    generation_tokens_total: int
    running: int
    waiting: int
    max_num_seqs: int
    kv_bytes_per_slot: int
    ttft_seconds: list[float]
    e2e_seconds: list[float]


class _Sequence:
    """One choice of a request: its tokens, text, random generator and slot."""

    def __init__(self, request: Request, index: int, decode: Callable[[list[int]], str]) -> None:
        self.request, self.index = request, index
        seed = request.params.seed  # any int, as vLLM takes it (numpy wants it unsigned)
        self.rng = np.random.default_rng([seed % 2**64, index]) if seed is not None else None
        self.tokens: list[int] = []
        self.text = TextStream(decode, request.params.stop)
        self.slot: int | None = None

    @property
    def last_position(self) -> int:
        return len(self.request.prompt_ids) + len(self.tokens) - 1


class Scheduler:
    """Queue, slots and steps of continuous batching.

    Args:
        decoder: a ``SlotDecoder`` (``num_slots``, ``prefill``, ``decode``).
        decode_text: token ids -> text.
        eos_token_id: the end-of-text token, or None.
        max_queue: requests that may wait at once; more are refused (``QueueFullError``).
        prefill_budget: prompt tokens to prefill per step while sequences are running.
    """

    def __init__(
        self,
        decoder: Any,
        decode_text: Callable[[list[int]], str],
        eos_token_id: int | None,
        *,
        max_queue: int = 256,
        prefill_budget: int = 512,
    ) -> None:
        self.decoder, self.decode_text, self.eos = decoder, decode_text, eos_token_id
        self.max_queue, self.prefill_budget = max_queue, prefill_budget
        self.free = list(range(decoder.num_slots))  # a heap: the lowest slot first
        self.running: dict[int, _Sequence] = {}
        self.waiting: deque[_Sequence] = deque()
        self._lock = threading.Lock()
        self._inbox: list[Request] = []
        self._cancelled: list[Request] = []
        self.closed = False
        self.work = threading.Event()  # set when there is something to do
        self._finished: Counter[str] = Counter()
        self._tokens = [0, 0]  # prompt, generated
        self._ttft: deque[float] = deque(maxlen=SAMPLES)
        self._e2e: deque[float] = deque(maxlen=SAMPLES)
        self._waiting_requests = 0

    # -- other threads ------------------------------------------------------------------
    def submit(self, request: Request, *, bounded: bool = True) -> None:
        """Queue ``request`` (thread-safe); ``bounded=False`` skips the ``max_queue`` limit
        (offline batches).

        Raises:
            EngineClosedError: the scheduler no longer admits requests.
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        with self._lock:
            if self.closed:
                raise EngineClosedError("the server is shutting down; no new requests")
            if bounded and self._waiting_requests >= self.max_queue:
                raise QueueFullError(
                    f"the queue is full ({self.max_queue} requests waiting); retry later"
                )
            self._waiting_requests += 1
            self._inbox.append(request)
        self.work.set()

    def cancel(self, request: Request) -> None:
        """Stop ``request``: its slots are freed at the next step (thread-safe)."""
        with self._lock:
            request.cancelled = True
            self._cancelled.append(request)
        self.work.set()

    def close(self) -> None:
        """Admit no more requests (those queued still run)."""
        with self._lock:
            self.closed = True

    def stats(self) -> Stats:
        """A snapshot of the counters (thread-safe enough: reads of ints and copies)."""
        return Stats(
            requests_total=dict(self._finished),
            prompt_tokens_total=self._tokens[0],
            generation_tokens_total=self._tokens[1],
            running=len(self.running),
            waiting=self._waiting_requests,
            max_num_seqs=self.decoder.num_slots,
            kv_bytes_per_slot=self.decoder.kv_bytes_per_slot,
            ttft_seconds=list(self._ttft),
            e2e_seconds=list(self._e2e),
        )

    @property
    def idle(self) -> bool:
        """Nothing running, waiting or handed in."""
        return not (self.running or self.waiting or self._inbox or self._cancelled)

    # -- the engine's thread --------------------------------------------------------------
    def step(self) -> None:
        """One iteration: take news, free cancelled slots, admit, decode one token."""
        self._take_news()
        self._admit()
        if self.running:  # the newly admitted too: their first token is already picked
            self._decode(list(self.running.values()))

    def abort_all(self, error: str | None = None) -> None:
        """Finish every running and waiting sequence with ``"abort"``."""
        self._take_news()
        for seq in [*self.running.values(), *self.waiting]:
            self._finish(seq, "abort", error=error)
        self.waiting.clear()

    def _take_news(self) -> None:
        with self._lock:
            new, self._inbox = self._inbox, []
            cancelled, self._cancelled = self._cancelled, []
            self.work.clear()
        for request in new:
            request.unfinished = request.params.n
            self.waiting.extend(
                _Sequence(request, i, self.decode_text) for i in range(request.params.n)
            )
        if cancelled:
            for seq in [s for s in self.running.values() if s.request.cancelled]:
                self._finish(seq, "abort")
            for seq in [s for s in self.waiting if s.request.cancelled]:
                self._finish(seq, "abort")
            self.waiting = deque(s for s in self.waiting if not s.request.cancelled)

    def _admit(self) -> None:
        spent = 0
        while self.free and self.waiting:
            if spent >= self.prefill_budget and self.running:
                break
            seq = self.waiting.popleft()
            if seq.index == seq.request.params.n - 1:
                with self._lock:
                    self._waiting_requests -= 1
            seq.slot = heapq.heappop(self.free)
            self.running[seq.slot] = seq
            spent += len(seq.request.prompt_ids)
            self._prefill(seq)

    def _prefill(self, seq: _Sequence) -> None:
        request = seq.request
        k = request.params.prompt_logprobs
        logits = self.decoder.prefill(seq.slot, request.prompt_ids, all_logits=k is not None)
        prompt_lp = None
        if k is not None:
            lp = log_softmax(logits[:-1])
            ids = request.prompt_ids
            prompt_lp = [None, *(token_logprob(lp[i], ids[i + 1], k) for i in range(len(ids) - 1))]
            logits = logits[-1]
        if seq.index == 0:
            self._tokens[0] += len(request.prompt_ids)
        self._advance(seq, logits, prompt_lp)

    def _decode(self, rows: list[_Sequence]) -> None:
        logits = self.decoder.decode(
            [s.slot for s in rows], [s.tokens[-1] for s in rows], [s.last_position for s in rows]
        )
        for seq, row in zip(rows, logits, strict=True):
            self._advance(seq, row)

    def _advance(self, seq: _Sequence, logits: np.ndarray, prompt_lp: Any = None) -> None:
        """Pick ``seq``'s next token from ``logits`` ``(V,)``, send it, finish if done."""
        params, request = seq.request.params, seq.request
        blocked = self._blocked(seq)
        if params.greedy and not params.penalized and not blocked:
            token = int(np.argmax(logits))
        else:
            processed = penalize(logits, params, request.prompt_ids, seq.tokens, blocked)
            token = pick(processed, params, seq.rng)
        logprobs = None
        if params.logprobs is not None:
            logprobs = [token_logprob(log_softmax(logits), token, params.logprobs)]
        seq.tokens.append(token)
        self._tokens[1] += 1
        if request.first_token is None:
            request.first_token = time.monotonic()
            self._ttft.append(request.first_token - request.arrival)
        text, stop_string = seq.text.add(token)
        reason, stop_reason = self._finish_reason(seq, token, stop_string)
        if reason is not None and stop_string is None:
            text += seq.text.flush()
        event = Event(seq.index, [token], text, logprobs, None, prompt_lp, stop_reason)
        if reason is None:
            self._send(request, event)
        else:
            self._finish(seq, reason, event=event)

    def _blocked(self, seq: _Sequence) -> list[int]:
        params = seq.request.params
        if len(seq.tokens) >= params.min_tokens:
            return []
        eos = [self.eos] if self.eos is not None and not params.ignore_eos else []
        return [*eos, *params.stop_token_ids]

    def _finish_reason(self, seq, token, stop_string) -> tuple[str | None, int | str | None]:
        params = seq.request.params
        if token == self.eos and not params.ignore_eos:
            return "stop", None
        if token in params.stop_token_ids:
            return "stop", token
        if stop_string is not None:
            return "stop", stop_string
        if params.max_tokens is not None and len(seq.tokens) >= params.max_tokens:
            return "length", None
        if seq.last_position + 1 >= seq.request.max_length:
            return "length", None
        return None, None

    def _finish(self, seq: _Sequence, reason: str, *, event: Event | None = None, error=None):
        request = seq.request
        if seq.slot is not None:
            del self.running[seq.slot]
            heapq.heappush(self.free, seq.slot)
            seq.slot = None
        elif seq.index == request.params.n - 1:
            with self._lock:  # the request's last choice never left the queue
                self._waiting_requests -= 1
        event = event or Event(seq.index, [], "")
        event.finish_reason, event.error = reason, error
        self._send(request, event)
        request.unfinished -= 1
        if request.unfinished == 0:
            self._finished[reason] += 1
            self._e2e.append(time.monotonic() - request.arrival)

    def _send(self, request: Request, event: Event) -> None:
        if request.cancelled and event.finish_reason is None:
            return
        try:
            request.sink(event)
        except Exception:  # a sink must not stop the batch; its request is cancelled
            logger.exception("the sink of request %s failed; cancelling it", request.request_id)
            self.cancel(request)
