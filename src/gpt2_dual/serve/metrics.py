"""``GET /metrics``: the engine's counters and gauges in Prometheus' text format 0.0.4.

Metric names are vLLM's (``vllm:...``) under the ``gpt2_dual_`` prefix, each labelled with
``model_name``:

| metric | type | from |
|---|---|---|
| ``gpt2_dual_request_success_total{finished_reason}`` | counter | ``Stats.requests_total`` |
| ``gpt2_dual_prompt_tokens_total`` | counter | ``Stats.prompt_tokens_total`` |
| ``gpt2_dual_generation_tokens_total`` | counter | ``Stats.generation_tokens_total`` |
| ``gpt2_dual_num_requests_running`` | gauge | ``Stats.running`` (sequences in slots) |
| ``gpt2_dual_num_requests_waiting`` | gauge | ``Stats.waiting`` |
| ``gpt2_dual_max_num_seqs`` | gauge | ``Stats.max_num_seqs`` |
| ``gpt2_dual_kv_cache_bytes_per_slot`` | gauge | ``Stats.kv_bytes_per_slot`` |
| ``gpt2_dual_time_to_first_token_seconds`` | histogram | the app's ``Histogram`` |
| ``gpt2_dual_e2e_request_latency_seconds`` | histogram | the app's ``Histogram`` |

The two histograms are cumulative since the app started: the app observes each HTTP request
(arrival to first token, arrival to last) in a ``Histogram``. Without them, ``render`` builds
them from the engine's recent samples (``Stats.ttft_seconds``, at most the last 10,000) and
says so in their HELP text. Buckets are vLLM's.

Example:
    >>> print(render(engine.stats(), "gpt2"))  # doctest: +SKIP
    # HELP gpt2_dual_request_success_total Requests finished, by finish reason.
    ...
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["CONTENT_TYPE", "E2E_BUCKETS", "TTFT_BUCKETS", "Histogram", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: vLLM's bucket bounds (seconds) for time to first token.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
#: vLLM's bucket bounds (seconds) for a request's end-to-end latency.
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
#: Finish reasons always reported (0 until one happens), as vLLM does.
REASONS = ("stop", "length", "abort")


class Histogram:
    """Cumulative counts of observations at or below each bound, their sum and count.

    Args:
        buckets: increasing upper bounds (``+Inf`` is added).
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # per bucket, the last one is +Inf
        self.sum = 0.0
        self.count = 0

    @classmethod
    def from_samples(cls, buckets: Sequence[float], samples: Iterable[float]) -> Histogram:
        """A histogram of ``samples``."""
        out = cls(buckets)
        for value in samples:
            out.observe(value)
        return out

    def observe(self, value: float) -> None:
        """Count one observation (a bound counts the values equal to it: ``le``)."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` per bound, ``+inf`` last."""
        out, total = [], 0
        for bound, n in zip((*self.buckets, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def render(
    stats: Any, model_name: str, *, ttft: Histogram | None = None, e2e: Histogram | None = None
) -> str:
    """The exposition text of ``stats`` (an ``Engine.stats()`` snapshot).

    Args:
        stats: ``Stats``: counters, gauges and recent latency samples.
        model_name: the ``model_name`` label.
        ttft: cumulative time-to-first-token histogram; default from ``stats.ttft_seconds``.
        e2e: cumulative end-to-end latency histogram; default from ``stats.e2e_seconds``.

    Returns:
        Prometheus text format 0.0.4, ending with a newline.
    """
    label = f'model_name="{_escape(model_name)}"'
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{{{labels}}} {_number(value)}" for labels, value in samples)

    reasons = [*REASONS, *sorted(set(stats.requests_total) - set(REASONS))]
    family("gpt2_dual_request_success_total", "counter", "Requests finished, by finish reason.",
           [(f'finished_reason="{_escape(r)}",{label}', stats.requests_total.get(r, 0))
            for r in reasons])  # fmt: skip
    family("gpt2_dual_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
           [(label, stats.prompt_tokens_total)])  # fmt: skip
    family("gpt2_dual_generation_tokens_total", "counter", "Tokens generated.",
           [(label, stats.generation_tokens_total)])  # fmt: skip
    family("gpt2_dual_num_requests_running", "gauge", "Sequences in cache slots now.",
           [(label, stats.running)])  # fmt: skip
    family("gpt2_dual_num_requests_waiting", "gauge", "Requests waiting for a slot now.",
           [(label, stats.waiting)])  # fmt: skip
    family("gpt2_dual_max_num_seqs", "gauge", "Cache slots: sequences decoded at once at most.",
           [(label, stats.max_num_seqs)])  # fmt: skip
    family("gpt2_dual_kv_cache_bytes_per_slot", "gauge", "Bytes of keys and values per slot.",
           [(label, stats.kv_bytes_per_slot)])  # fmt: skip
    recent = " (over the engine's recent requests, at most the last 10000)"
    for name, what, hist, samples, buckets in (
        ("time_to_first_token", "Time to first token", ttft, stats.ttft_seconds, TTFT_BUCKETS),
        ("e2e_request_latency", "End-to-end request latency", e2e, stats.e2e_seconds, E2E_BUCKETS),
    ):
        window = "" if hist is not None else recent
        hist = hist if hist is not None else Histogram.from_samples(buckets, samples)
        lines.extend(_histogram(f"gpt2_dual_{name}_seconds", f"{what} in seconds{window}.",
                                hist, label))  # fmt: skip
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, hist: Histogram, label: str) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound, count in hist.cumulative():
        lines.append(f'{name}_bucket{{{label},le="{_number(bound)}"}} {count}')
    lines.append(f"{name}_sum{{{label}}} {_number(hist.sum)}")
    lines.append(f"{name}_count{{{label}}} {hist.count}")
    return lines


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
