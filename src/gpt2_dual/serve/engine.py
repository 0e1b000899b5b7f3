"""``Engine``: a model, its tokenizer and the continuous-batching scheduler, in one object.

Two ways in:

- Offline, like vLLM's ``LLM.generate`` or transformers 5's ``generate_batch``: a list of
  prompts in, one ``RequestOutput`` per prompt out, with a progress bar
  (``Engine.generate``; the batch is scheduled continuously, so short and long requests mix).
- Online, for the HTTP server: ``start()`` runs the scheduler on a background thread;
  ``submit(prompt_ids, params, sink)`` queues a request whose news reach ``sink`` as
  ``Event``\\ s from that thread; ``Handle.cancel()`` stops it; ``stop(timeout)`` lets
  in-flight requests finish, then aborts the rest.

Requests are checked before they queue (``RequestError``, HTTP 400): an empty prompt, a token
id past the vocabulary, a prompt plus ``max_tokens`` past the context (vLLM's message).

Example:
    >>> engine = Engine.from_pretrained("path/to/gpt2", max_num_seqs=8)  # doctest: +SKIP
    >>> greedy = SamplingParams(temperature=0, max_tokens=8)
    >>> out = engine.generate(["Hello, I'm"], greedy)  # doctest: +SKIP
    >>> out[0].outputs[0].text  # doctest: +SKIP
    " a language model, and I'm"
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpt2_dual.errors import RequestError
from gpt2_dual.serve.params import SamplingParams
from gpt2_dual.serve.sampler import TokenLogprob
from gpt2_dual.serve.scheduler import Event, Request, Scheduler, Stats

logger = logging.getLogger(__name__)

__all__ = ["CompletionOutput", "Engine", "Handle", "RequestOutput"]

#: How a sequence's text is decoded (special tokens left out, as vLLM does by default).
DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


@dataclass
class CompletionOutput:
    """One choice of an offline result (vLLM's ``CompletionOutput`` fields)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """One prompt's offline result (vLLM's ``RequestOutput`` fields)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[TokenLogprob | None] | None = None


class Handle:
    """A submitted request: ``cancel()`` it from any thread."""

    def __init__(self, scheduler: Scheduler, request: Request) -> None:
        self._scheduler, self._request = scheduler, request
        self.request_id = request.request_id

    def cancel(self) -> None:
        """Free the request's slots at the next step; its choices end with ``"abort"``."""
        if not self._request.cancelled:
            self._scheduler.cancel(self._request)


class Engine:
    """Continuous batching over one GPT-2 LM.

    Args:
        model: a ``gpt2_dual.pt`` or ``gpt2_dual.tf`` ``GPT2LMHeadModel``.
        tokenizer: its gpt2_dual tokenizer.
        max_num_seqs: sequences decoded at once (cache slots; never more are allocated).
        max_model_len: prompt + generated tokens per sequence; default ``n_positions``.
        max_queue: requests that may wait for a slot; more get ``QueueFullError`` (429).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        max_queue: int = 256,
    ) -> None:
        config = model.config
        self.max_model_len = config.n_positions if max_model_len is None else max_model_len
        if not 1 <= self.max_model_len <= config.n_positions:
            raise RequestError(
                f"max_model_len must be in [1, n_positions={config.n_positions}]; got "
                f"{max_model_len}", param="max_model_len",
            )  # fmt: skip
        if max_queue < 1:  # a request waits (is queued) from submit until it gets a slot
            raise RequestError(f"max_queue must be at least 1; got {max_queue}")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.framework = "tf" if type(model).__module__.startswith("gpt2_dual.tf.") else "pt"
        self.decoder = _decoder(self.framework)(model, max_num_seqs, self.max_model_len)
        self.max_num_seqs = max_num_seqs
        self.kv_bytes_per_slot = self.decoder.kv_bytes_per_slot
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
        self.eos_token_id = eos
        self.vocab_size = self.decoder.vocab_size
        self.scheduler = Scheduler(
            self.decoder, lambda ids: tokenizer.decode(ids, **DECODE), eos, max_queue=max_queue
        )
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._looping = threading.Event()  # a loop has started (start() or run())
        self._done = threading.Event()  # ... and ended
        self._stopping = threading.Event()
        self._deadline = float("inf")

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        framework: str | None = None,
        dtype: str | None = None,
        device: Any = None,
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        max_queue: int = 256,
        chat_template: str | None = None,
        **model_kwargs: Any,
    ) -> Engine:
        """Load ``GPT2LMHeadModel`` and ``GPT2TokenizerFast`` from a folder or Hub id.

        Args:
            model: a checkpoint folder or Hub repo id.
            framework: ``"pt"`` or ``"tf"``; default pt when torch is installed.
            dtype: the model's dtype (``"float32"``, ``"bfloat16"``, ``"auto"``, ...).
            device: as ``pipeline`` takes it.
            chat_template: a Jinja chat template to use instead of the tokenizer's.
            **model_kwargs: more ``from_pretrained`` keywords (``quantization_config``, ...).
        """
        from gpt2_dual.pipelines.factory import pipeline

        pipe = pipeline(
            "text-generation", model=model, framework=framework, dtype=dtype, device=device,
            model_kwargs=model_kwargs,
        )  # fmt: skip
        if chat_template is not None:
            pipe.tokenizer.chat_template = chat_template
        return cls(
            pipe.model, pipe.tokenizer, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
            max_queue=max_queue,
        )  # fmt: skip

    # -- online ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run the scheduler on a background thread (once).

        With PyTorch on CPU, prefer ``run()`` in the thread that loaded the model where the
        program allows (``gpt2-dual serve`` does): torch work in a second thread makes a second
        OpenMP thread pool, and with more pool threads than cores OpenMP stops spinning between
        parallel regions, so every op pays a wake-up (a step of 16 sequences: 49-57 against
        41-44 ms on a 2-core AMD EPYC).
        """
        if self._thread is None and not self._looping.is_set():
            self._thread = threading.Thread(target=self._loop, name="gpt2-dual-engine", daemon=True)
            self._thread.start()

    def run(self) -> None:
        """Run the scheduler in the calling thread until ``stop`` (from another thread or a
        signal handler) and the requests it lets finish are done."""
        if self._thread is not None:
            raise RuntimeError("the engine already runs on its own thread (start())")
        self._loop()

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        sink: Callable[[Event], None],
        *,
        request_id: str | None = None,
    ) -> Handle:
        """Queue one request (thread-safe); ``sink`` gets its ``Event``\\ s on the engine's
        thread and must return quickly.

        Raises:
            RequestError: the prompt is empty, holds an id outside the vocabulary, or does not
                fit the context with ``max_tokens``.
            QueueFullError: the queue is full (429). EngineClosedError: stopping (503).
        """
        return self._submit(self.check_prompt(prompt_ids, params), params, sink, request_id)

    def _submit(self, ids, params, sink, request_id, *, bounded: bool = True) -> Handle:
        request = Request(
            request_id or f"req-{uuid.uuid4().hex}", ids, params, sink, self.max_model_len
        )
        self.scheduler.submit(request, bounded=bounded)
        return Handle(self.scheduler, request)

    def check_prompt(self, prompt_ids: Sequence[int], params: SamplingParams) -> list[int]:
        """The prompt as a list of ints, checked against the vocabulary and the context."""
        ids = [int(i) for i in prompt_ids]
        if not ids:
            raise RequestError("the prompt is empty; give at least one token", param="prompt")
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise RequestError(
                f"token id {bad} in the prompt is outside the vocabulary [0, {self.vocab_size})",
                param="prompt",
            )
        wanted = len(ids) + (params.max_tokens or 1)
        if wanted > self.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {wanted} tokens ({len(ids)} in the messages, "
                f"{params.max_tokens or 1} in the completion). Please reduce the length of the "
                "messages or completion.",
                param="max_tokens" if len(ids) < self.max_model_len else "prompt",
            )
        return ids

    def stop(self, timeout: float = 0.0) -> None:
        """Admit nothing more; let running requests finish for up to ``timeout`` seconds,
        then abort the rest (their sinks get ``"abort"``); wait for the thread."""
        self.scheduler.close()
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self.scheduler.work.set()
        if self._looping.is_set():  # in start()'s thread or in run()
            if threading.current_thread() is not self._loop_thread:
                self._done.wait()
        else:
            self.scheduler.abort_all()

    @property
    def closed(self) -> bool:
        """``stop`` was called: no request is admitted (``/health`` answers 503)."""
        return self.scheduler.closed

    def stats(self) -> Stats:
        """Counters and gauges for ``/metrics``."""
        return self.scheduler.stats()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs or waits; False if ``timeout`` seconds pass first."""
        end = time.monotonic() + timeout
        while not self.scheduler.idle:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def _loop(self) -> None:
        self._loop_thread = threading.current_thread()
        self._looping.set()
        try:
            self._steps()
        finally:
            self._done.set()

    def _steps(self) -> None:
        scheduler = self.scheduler
        while True:
            if self._stopping.is_set():
                if scheduler.idle:
                    return
                if time.monotonic() >= self._deadline:
                    scheduler.abort_all()
                    return
            if scheduler.idle:
                scheduler.work.wait(0.1)
                continue
            try:
                scheduler.step()
            except Exception as err:  # a failed step aborts what runs; the server stays up
                logger.exception("a decode step failed; aborting the running requests")
                scheduler.abort_all(error=f"{type(err).__name__}: {err}")

    # -- offline --------------------------------------------------------------------------
    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        *,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generate for every prompt, scheduled continuously; blocks until all are done.

        Args:
            prompts: a string, a list of strings, a list of token ids or a list of lists.
            params: how to decode (default ``SamplingParams()``: vLLM's defaults).
            use_tqdm: show a progress bar (on stderr, when it is a terminal).

        Returns:
            One ``RequestOutput`` per prompt, in order.
        """
        params = params or SamplingParams()
        texts, id_lists = self._prompts(prompts)
        finished = threading.Semaphore(0)  # released once per finished request
        results = [
            _Collector(t, ids, params.n, finished.release)
            for t, ids in zip(texts, id_lists, strict=True)
        ]
        id_lists = [self.check_prompt(ids, params) for ids in id_lists]  # all, before any runs
        for i, (result, ids) in enumerate(zip(results, id_lists, strict=True)):
            result.handle = self._submit(ids, params, result.add, str(i), bounded=False)
        bar = _progress(len(results), use_tqdm)
        for _ in results:
            # With the loop on its thread, block rather than poll: a thread that wakes up
            # takes a core from the step's matrix products (52 against 41 ms a step of 16
            # sequences on 2 cores when polling every 5 ms).
            while not finished.acquire(blocking=self._thread is not None):
                self.scheduler.step()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return [r.output(str(i)) for i, r in enumerate(results)]

    def _prompts(self, prompts: Any) -> tuple[list[str | None], list[list[int]]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if prompts and all(isinstance(p, int) for p in prompts):
            prompts = [prompts]
        texts = [p if isinstance(p, str) else None for p in prompts]
        ids = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        return texts, ids


class _Collector:
    """Gathers one request's events into a ``RequestOutput``."""

    def __init__(
        self, prompt: str | None, prompt_ids: list[int], n: int, done: Callable[[], None]
    ) -> None:
        self.prompt, self.prompt_ids = prompt, prompt_ids
        self.choices = [CompletionOutput(i, "", [], None) for i in range(n)]
        self.prompt_logprobs = None
        self.left, self.done = n, done
        self.handle: Handle | None = None

    @property
    def finished(self) -> bool:
        return self.left == 0

    def add(self, event: Event) -> None:
        choice = self.choices[event.index]
        choice.text += event.text
        choice.token_ids += event.token_ids
        if event.logprobs is not None:
            choice.logprobs = (choice.logprobs or []) + event.logprobs
        if event.prompt_logprobs is not None:
            self.prompt_logprobs = event.prompt_logprobs
        if event.finish_reason is not None:
            choice.finish_reason, choice.stop_reason = event.finish_reason, event.stop_reason
            self.left -= 1
            if self.left == 0:
                self.done()

    def output(self, request_id: str) -> RequestOutput:
        return RequestOutput(
            request_id, self.prompt, self.prompt_ids, self.choices, self.prompt_logprobs
        )


def _decoder(framework: str) -> Any:
    if framework == "pt":
        from gpt2_dual.pt.slots import SlotDecoder
    else:
        from gpt2_dual.tf.slots import SlotDecoder
    return SlotDecoder


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="generating", unit="request", leave=False)
