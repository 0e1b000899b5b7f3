"""What a training run records: ``trainer_state.json``, TensorBoard scalars and a progress bar.

``TrainerState`` is transformers' ``trainer_state.json`` field for field (transformers 4.57's
``TrainerState`` dataclass, same defaults, same JSON layout), so tools that read a Trainer's
output folder read ours. ``EventWriter`` writes TensorBoard event files under
``<output_dir>/runs/<date>_<host>`` with transformers' tags (``train/loss``, ``eval/loss``,
...). It uses the ``tensorboard`` package's record writer and protocol buffers directly:
``tensorboard``'s ``EventFileWriter`` would import TensorFlow when it is installed (seconds,
and its start-up messages), which a PyTorch run does not need.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import numbers
import os
import socket
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from gpt2_dual import _io
from gpt2_dual.errors import InputTypeError, MalformedFileError

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "gpt2_dual[train]"'


@dataclasses.dataclass
class TrainerState:
    """transformers' ``TrainerState``: the state saved as ``trainer_state.json``.

    Fields, names and defaults are transformers 4.57's. One step is one optimizer update
    (``gradient_accumulation_steps`` micro-batches). ``log_history`` holds one dict per log,
    as Trainer writes them: ``{"epoch", "grad_norm", "learning_rate", "loss", "step"}`` for
    training, ``{"epoch", "eval_loss", "eval_perplexity", "step"}`` for an evaluation.

    Example:
        >>> state = TrainerState(max_steps=100, logging_steps=1, save_steps=50)
        >>> state.log_history.append({"epoch": 0.1, "loss": 3.2, "step": 1})
        >>> state.save(Path("out/trainer_state.json"))
    """

    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int | None = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """The file's text, exactly as transformers' ``save_to_json`` writes it."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        """Write ``trainer_state.json`` to ``path`` atomically."""
        _io.atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        """Read a ``trainer_state.json`` (ours or transformers'); keys this version does not
        know are left out.

        Raises:
            FileNotFoundError: no file at ``path``.
            MalformedFileError: not a JSON object, or a field of the wrong type (named).
        """
        data = _io.read_json_object(path)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _io.check_field(path, data, f.name, _FIELD_TYPES[f.name])
        unknown = sorted(set(data) - set(values))
        if unknown:
            logger.debug("%s: ignoring keys this version does not know: %s", path, unknown)
        history = values.get("log_history") or []
        for i, entry in enumerate(history):
            if not isinstance(entry, dict):
                raise MalformedFileError(
                    f"{path}: log_history[{i}] must be an object, found {_io.json_type(entry)}"
                )
        # a JSON null leaves the default (transformers' __post_init__ does the same for these)
        for name in ("log_history", "stateful_callbacks"):
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values)


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, Any] = {
    "epoch": _NUMBER, "global_step": int, "max_steps": int, "logging_steps": _NUMBER,
    "eval_steps": _NUMBER, "save_steps": _NUMBER, "train_batch_size": int,
    "num_train_epochs": _NUMBER, "num_input_tokens_seen": int, "total_flos": _NUMBER,
    "log_history": list, "best_metric": _NUMBER, "best_global_step": int,
    "best_model_checkpoint": str, "is_local_process_zero": bool, "is_world_process_zero": bool,
    "is_hyper_param_search": bool, "trial_name": str, "trial_params": dict,
    "stateful_callbacks": dict,
}  # fmt: skip


def default_logdir(output_dir: Path) -> Path:
    """``output_dir/runs/<Mon>DD_HH-MM-SS_<host>``: transformers' default ``logging_dir``."""
    return Path(output_dir) / "runs" / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}"


def tensorboard_tag(key: str) -> str:
    """transformers' TensorBoard tag for a log key: ``eval_loss`` -> ``eval/loss``,
    ``test_x`` -> ``test/x``, ``loss`` -> ``train/loss``; a key with a ``/`` is kept."""
    if "/" in key:
        return key
    for prefix in ("eval", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1 :]}"
    return f"train/{key}"


_writer_ids = itertools.count()
_warned_missing = False


class EventWriter:
    """TensorBoard scalars in one event file under ``logdir``; only the main process makes one.

    Without the ``tensorboard`` package it logs one warning (once per process) and writes
    nothing: no folder, no file.

    Args:
        logdir: the folder for the event file (``default_logdir(output_dir)``); created.

    Example:
        >>> with EventWriter(default_logdir(Path("out"))) as events:
        ...     events.scalars(1, {"loss": 3.21, "learning_rate": 5e-5})  # train/loss, ...
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self.path: Path | None = None
        self._file: IO[bytes] | None = None
        self._closed = False
        tensorboard = _import_tensorboard()
        if tensorboard is None:
            return
        self._event_pb2, self._summary_pb2, record_writer = tensorboard
        self.logdir.mkdir(parents=True, exist_ok=True)
        # the name torch's and tensorboard's writers give: TensorBoard orders files by it
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_writer_ids)}"
        )
        self.path = self.logdir / name
        self._file = open(self.path, "wb")
        self._records = record_writer(self._file)
        meta = self._event_pb2.SourceMetadata(writer="gpt2_dual.train.logs")
        self._add(self._event_pb2.Event(file_version="brain.Event:2", source_metadata=meta))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` at ``step`` and flush them to disk.

        Args:
            step: the optimizer step (TensorBoard's x axis).
            values: log keys (``loss``, ``learning_rate``, ``eval_loss``; tagged as
                ``tensorboard_tag`` says) or tags (``train/loss``) to numbers. A ``step`` key
                is left out, so a ``log_history`` entry can be passed as it is.
        """
        if self._closed:
            raise ValueError(f"EventWriter for {self.logdir} is closed")
        items = [(k, v) for k, v in values.items() if k != "step"]
        for key, value in items:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InputTypeError(f"scalar {key!r} must be a number, got {value!r:.80}")
        if self._file is None:
            return
        summary = self._summary_pb2.Summary(
            value=[
                self._summary_pb2.Summary.Value(tag=tensorboard_tag(k), simple_value=float(v))
                for k, v in items
            ]
        )
        self._add(self._event_pb2.Event(step=int(step), summary=summary))

    def close(self) -> None:
        """Flush and close the event file; closing twice is allowed."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, event: Any) -> None:
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())
        self._file.flush()


def _import_tensorboard() -> tuple[Any, Any, Any] | None:
    """``(event_pb2, summary_pb2, RecordWriter)``, or None with one warning per process."""
    global _warned_missing
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        if not _warned_missing:
            _warned_missing = True
            logger.warning(
                "TensorBoard logs are off: the tensorboard package is not installed (%s)",
                INSTALL_HINT,
            )
        return None
    return event_pb2, summary_pb2, RecordWriter


class Progress:
    """A progress bar on stderr: step/max_steps, elapsed<time left, loss and tokens/s.

    As the other commands' bars (``gpt2_dual.cli.progress``): a tqdm bar when ``file`` is a
    terminal, nothing when it is piped; only on the main process; ``quiet`` turns it off.

    Args:
        max_steps: the step the run ends at.
        initial: the step it starts from (a resumed run).
        is_main: whether this is the main process (the others show nothing).
        quiet: show nothing.
        file: where to draw it (default ``sys.stderr``).

    Example:
        >>> progress = Progress(100, initial=40)
        >>> progress.update(41, loss=3.21, tokens_per_second=4096.0)
        >>> progress.close()
    """

    def __init__(
        self,
        max_steps: int,
        *,
        initial: int = 0,
        is_main: bool = True,
        quiet: bool = False,
        file: IO[str] | None = None,
    ) -> None:
        file = sys.stderr if file is None else file
        self._bar: Any = None
        if is_main and not quiet and _isatty(file):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=max_steps, initial=initial, desc="train", unit="step", file=file)

    @property
    def enabled(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def update(self, step: int, *, loss: float, tokens_per_second: float) -> None:
        """Show that ``step`` optimizer steps are done, with the last loss and speed."""
        if self._bar is None:
            return
        self._bar.set_postfix_str(
            f"loss={loss:.4f}, tokens/s={tokens_per_second:,.0f}", refresh=False
        )
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        """Draw the final state and end the line; closing twice is allowed."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
