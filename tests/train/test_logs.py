"""trainer_state.json as transformers writes it, TensorBoard scalars, the progress bar."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import termios
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from gpt2_dual.errors import InputTypeError, MalformedFileError
from gpt2_dual.train.logs import (
    EventWriter,
    Progress,
    TrainerState,
    default_logdir,
    tensorboard_tag,
)


@pytest.fixture(scope="module")
def hf_callback():
    """transformers' trainer_callback module, the reference for trainer_state.json."""
    return pytest.importorskip("transformers.trainer_callback")


def a_state() -> TrainerState:
    """A state as a run of 4 steps writes it, with floats that JSON spells in several ways."""
    history = [
        {"epoch": 0.25 * s, "grad_norm": 1.0 / s, "learning_rate": 5e-05 * (4 - s) / 4,
         "loss": round(3.2 / s, 4), "step": s}
        for s in (1, 2, 3, 4)
    ]  # fmt: skip
    history.append({"epoch": 1.0, "eval_loss": 2.5, "eval_perplexity": math.exp(2.5), "step": 4})
    return TrainerState(
        epoch=1.0, global_step=4, max_steps=4, logging_steps=1, eval_steps=2, save_steps=2,
        train_batch_size=8, num_input_tokens_seen=4096, total_flos=1.5e12, log_history=history,
    )  # fmt: skip


def test_fields_and_defaults_are_transformers(hf_callback):
    ours = [f.name for f in dataclasses.fields(TrainerState)]
    assert ours == [f.name for f in dataclasses.fields(hf_callback.TrainerState)]
    assert dataclasses.asdict(TrainerState()) == dataclasses.asdict(hf_callback.TrainerState())


def test_the_file_is_byte_for_byte_what_transformers_writes(tmp_path, hf_callback):
    state = a_state()
    state.save(tmp_path / "ours.json")
    hf_callback.TrainerState(**dataclasses.asdict(state)).save_to_json(tmp_path / "theirs.json")
    assert (tmp_path / "ours.json").read_bytes() == (tmp_path / "theirs.json").read_bytes()


def test_transformers_loads_our_file_and_we_load_theirs(tmp_path, hf_callback):
    state = a_state()
    state.save(tmp_path / "trainer_state.json")
    theirs = hf_callback.TrainerState.load_from_json(tmp_path / "trainer_state.json")
    assert dataclasses.asdict(theirs) == dataclasses.asdict(state)
    assert theirs.log_history[1] == {
        "epoch": 0.5, "grad_norm": 0.5, "learning_rate": 2.5e-05, "loss": 1.6, "step": 2,
    }  # fmt: skip
    theirs.best_metric, theirs.best_model_checkpoint = 2.5, "out/checkpoint-4"
    theirs.save_to_json(tmp_path / "theirs.json")
    assert dataclasses.asdict(TrainerState.load(tmp_path / "theirs.json")) == (
        dataclasses.asdict(theirs)
    )


def test_load_leaves_out_keys_of_other_versions(tmp_path):
    data = json.loads(a_state().to_json())
    data["a_field_of_transformers_6"] = 1
    (tmp_path / "trainer_state.json").write_text(json.dumps(data))
    assert TrainerState.load(tmp_path / "trainer_state.json") == a_state()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"global_step": "4"}, "'global_step' must be int, found '4'"),
        ({"global_step": 4.0}, "'global_step' must be int, found 4.0"),
        ({"log_history": {"loss": 1}}, "'log_history' must be list, found {'loss': 1}"),
        ({"log_history": [{"loss": 1}, 2]}, "log_history[1] must be an object, found number"),
    ],
)
def test_a_malformed_file_is_named(tmp_path, data, message):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MalformedFileError) as err:
        TrainerState.load(path)
    assert str(err.value) == f"{path}: {message}"


def test_save_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "trainer_state.json"
    TrainerState(global_step=1).save(path)
    a_state().save(path)
    assert TrainerState.load(path) == a_state()
    assert [p.name for p in tmp_path.iterdir()] == ["trainer_state.json"]


def test_tags_are_transformers_tags():
    rewrite_logs = pytest.importorskip("transformers.integrations.integration_utils").rewrite_logs

    keys = ["loss", "learning_rate", "grad_norm", "epoch", "tokens_per_second", "eval_loss",
            "eval_perplexity", "test_loss", "evaluation"]  # fmt: skip
    theirs = list(rewrite_logs(dict.fromkeys(keys, 0.0)))  # same order as the keys
    assert [tensorboard_tag(k) for k in keys] == theirs
    assert tensorboard_tag("train/loss") == "train/loss"


def test_default_logdir_is_transformers_layout(tmp_path):
    before = datetime.now()
    logdir = default_logdir(tmp_path)
    after = datetime.now()
    names = {f"{t:%b%d_%H-%M-%S}_{socket.gethostname()}" for t in (before, after)}
    assert logdir.parent == tmp_path / "runs"
    assert logdir.name in names


def read_events(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars in ``logdir`` as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_scalars_are_read_back_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    logdir = default_logdir(tmp_path)
    logs = [
        {"epoch": 0.5, "grad_norm": 1.23, "learning_rate": 5e-05, "loss": 3.21, "step": 10},
        {"tokens_per_second": 4096.5},
        {"epoch": 1.0, "grad_norm": 0.5, "learning_rate": 2.5e-05, "loss": 2.5, "step": 20},
        {"eval_loss": 2.75, "eval_perplexity": math.exp(2.75)},
    ]
    steps = [10, 10, 20, 20]
    with EventWriter(logdir) as events:
        for step, values in zip(steps, logs, strict=True):
            events.scalars(step, values)
    assert events.path.parent == logdir
    assert re.fullmatch(rf"events\.out\.tfevents\.\d{{10}}\.{re.escape(socket.gethostname())}"
                        rf"\.{os.getpid()}\.\d+", events.path.name)  # fmt: skip
    expected: dict[str, list[tuple[int, float]]] = {}
    for step, values in zip(steps, logs, strict=True):
        for key, value in values.items():
            if key != "step":  # the x axis, not a scalar
                expected.setdefault(tensorboard_tag(key), []).append((step, float(value)))
    read = read_events(logdir)
    assert sorted(read) == sorted(expected) == [
        "eval/loss", "eval/perplexity", "train/epoch", "train/grad_norm",
        "train/learning_rate", "train/loss", "train/tokens_per_second",
    ]  # fmt: skip
    for tag, points in expected.items():  # TensorBoard keeps float32 values
        assert [s for s, _ in read[tag]] == [s for s, _ in points], tag
        np.testing.assert_array_equal(
            np.float32([v for _, v in read[tag]]), np.float32([v for _, v in points]), tag
        )


def test_scalars_refuse_a_value_that_is_not_a_number(tmp_path):
    with EventWriter(tmp_path) as events:
        with pytest.raises(InputTypeError) as err:
            events.scalars(1, {"loss": 2.0, "note": "high"})
    assert str(err.value) == "scalar 'note' must be a number, got 'high'"
    with pytest.raises(ValueError, match=f"^EventWriter for {tmp_path} is closed$"):
        events.scalars(2, {"loss": 1.0})
    events.close()  # twice is fine


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip


def test_without_tensorboard_one_warning_and_no_files(tmp_path):
    code = """if True:
        import sys
        sys.modules["tensorboard"] = None  # as if it were not installed
        from pathlib import Path
        from gpt2_dual.train.logs import EventWriter
        out = Path(sys.argv[1])
        for run in ("a", "b"):
            with EventWriter(out / "runs" / run) as events:
                events.scalars(1, {"loss": 3.0})
                events.scalars(2, {"loss": 2.0})
        print(events.path)
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n"
    assert result.stderr == (
        "TensorBoard logs are off: the tensorboard package is not installed "
        '(pip install "gpt2_dual[train]")\n'
    )
    assert list(tmp_path.iterdir()) == []


def test_writing_events_does_not_import_tensorflow(tmp_path):
    """tensorboard's own EventFileWriter would import TensorFlow (seconds) when installed."""
    pytest.importorskip("tensorboard")
    code = """if True:
        import sys
        from pathlib import Path
        from gpt2_dual.train.logs import EventWriter
        with EventWriter(Path(sys.argv[1])) as events:
            events.scalars(1, {"loss": 3.0})
        print(sorted(m for m in ("tensorflow", "torch") if m in sys.modules))
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def read_terminal(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_progress_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        with os.fdopen(slave, "w") as terminal:
            progress = Progress(10, initial=4, file=terminal)
            assert progress.enabled
            progress.update(5, loss=3.25, tokens_per_second=4096.4)
            progress.update(7, loss=2.5, tokens_per_second=12345.6)
            progress.close()
            progress.close()
        text = read_terminal(master)
    finally:
        os.close(master)
    last = text.rstrip("\r\n").split("\r")[-1]
    # step/max_steps, [elapsed<time left, rate, loss, tokens/s]
    pattern = (
        r"train:  70%\|.*\| 7/10 \[\d\d:\d\d<(\d\d:\d\d|\?), .*step/s, "
        r"loss=2\.5000, tokens/s=12,346\]"
    )
    assert re.fullmatch(pattern, last), repr(text)


@pytest.mark.parametrize(
    "options", [{}, {"quiet": True}, {"is_main": False}], ids=["piped", "quiet", "not-main"]
)
def test_progress_shows_nothing_when_piped_quiet_or_not_main(options):
    if options:  # a terminal, turned off by the option
        master, slave = os.openpty()
        file = os.fdopen(slave, "w")
    else:
        file = io.StringIO()
    progress = Progress(10, file=file, **options)
    assert not progress.enabled
    progress.update(1, loss=3.0, tokens_per_second=1.0)
    progress.close()
    if options:
        file.close()
        assert read_terminal(master) == ""
        os.close(master)
    else:
        assert file.getvalue() == ""
