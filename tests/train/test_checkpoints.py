"""The output folder of a run: claiming it, checkpoints written atomically, rotation, clearing."""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

import pytest

from gpt2_dual._io import atomic_write_text
from gpt2_dual.errors import InvalidInputError, TrainingError
from gpt2_dual.train.checkpoints import (
    claim_output_dir,
    clear_run,
    latest_checkpoint,
    write_checkpoint,
)


def snapshot(root: Path, *, with_root: bool = True) -> dict[str, tuple]:
    """Every entry under ``root``: kind, bytes and modification time (what "untouched" means);
    ``with_root``: ``root``'s own time too (changed by any file made and removed in it)."""
    found = {".": ("dir", None, root.stat().st_mtime_ns)} if with_root and root.exists() else {}
    for path in sorted(root.rglob("*")):
        data = None if path.is_dir() else path.read_bytes()
        found[str(path.relative_to(root))] = (path.is_dir(), data, path.stat().st_mtime_ns)
    return found


def make_run(out: Path, *steps: int, state: bool = True) -> None:
    """A finished earlier run: checkpoints of ``steps``, trainer_state.json and runs/."""
    for step in steps:
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "model.safetensors").write_text(f"weights {step}")
    (out / "runs" / "Jan01_00-00-00_host").mkdir(parents=True)
    (out / "runs" / "Jan01_00-00-00_host" / "events.out.tfevents.1").write_text("events")
    if state:
        (out / "trainer_state.json").write_text("{}")


def write_file(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def test_fresh_folder_is_accepted_and_nothing_is_created(tmp_path):
    out = tmp_path / "new" / "run"
    assert claim_output_dir(out, resume=False, overwrite=False) is None
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("marker", ["trainer_state.json", "checkpoint-20"])
def test_a_held_folder_is_refused_and_left_as_it_was(tmp_path, marker):
    out = tmp_path / "run"
    make_run(out, 20, state=marker == "trainer_state.json")
    if marker != "trainer_state.json":
        (out / ".checkpoint-30.tmp").mkdir()  # an interrupted write: kept when refusing too
    before = snapshot(out)
    with pytest.raises(TrainingError) as err:
        claim_output_dir(out, resume=False, overwrite=False)
    assert str(err.value) == (
        f"--output-dir {out} already holds a training run ({out / marker} is there); "
        "pass --resume to continue it or --overwrite to replace it"
    )
    assert snapshot(out) == before


def test_a_folder_with_other_files_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "runs").mkdir()
    assert claim_output_dir(tmp_path, resume=False, overwrite=False) is None


def test_resume_returns_the_highest_complete_step_and_removes_tmp_folders(tmp_path):
    make_run(tmp_path, 2, 10, 9)
    (tmp_path / ".checkpoint-30.tmp").mkdir()  # killed while writing: not complete
    (tmp_path / ".checkpoint-30.tmp" / "model.safetensors").write_text("half")
    (tmp_path / "checkpoint-40").write_text("a file, not a checkpoint folder")
    (tmp_path / "checkpoint-last").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # 10 > 9 > 2, not by name
    assert claim_output_dir(tmp_path, resume=True, overwrite=False) == tmp_path / "checkpoint-10"
    assert not (tmp_path / ".checkpoint-30.tmp").exists()
    assert (tmp_path / "checkpoint-2" / "model.safetensors").read_text() == "weights 2"


def test_resume_without_checkpoints_is_a_fresh_start(tmp_path):
    assert claim_output_dir(tmp_path / "none", resume=True, overwrite=False) is None
    assert not (tmp_path / "none").exists()
    make_run(tmp_path / "state-only")
    assert claim_output_dir(tmp_path / "state-only", resume=True, overwrite=False) is None
    assert latest_checkpoint(tmp_path / "none") is None


def test_overwrite_accepts_a_held_folder_and_deletes_nothing(tmp_path):
    make_run(tmp_path, 5)
    before = snapshot(tmp_path)
    assert claim_output_dir(tmp_path, resume=False, overwrite=True) is None
    assert snapshot(tmp_path) == before


def test_resume_and_overwrite_together_are_refused(tmp_path):
    make_run(tmp_path, 5)
    before = snapshot(tmp_path)
    with pytest.raises(InvalidInputError) as err:
        claim_output_dir(tmp_path, resume=True, overwrite=True)
    assert str(err.value) == (
        "--resume and --overwrite cannot be given together: --resume continues the run in "
        f"{tmp_path}, --overwrite replaces it"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}])
def test_a_folder_under_a_file_is_refused(tmp_path, flags):
    """Refused for root as well: no permission bit lets a folder be made inside a file."""
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "run"
    before = snapshot(tmp_path)
    with pytest.raises(TrainingError) as err:
        claim_output_dir(out, **{"resume": False, "overwrite": False, **flags})
    assert str(err.value) == (
        f"--output-dir {out} cannot be written: {tmp_path / 'notes.txt'} is a file, not a folder"
    )
    assert snapshot(tmp_path) == before


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "model.bin"
    out.write_text("weights")
    with pytest.raises(TrainingError, match=rf"^--output-dir {out} cannot be written: {out} is a"):
        claim_output_dir(out, resume=False, overwrite=False)
    assert out.read_text() == "weights"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod (a file path covers it)")
@pytest.mark.parametrize("exists", [True, False], ids=["folder", "parent"])
def test_a_read_only_folder_is_refused(tmp_path, exists):
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked if exists else locked / "run"
    if exists:
        make_run(locked, 5)
    before = snapshot(tmp_path)
    locked.chmod(0o555)
    try:
        with pytest.raises(TrainingError) as err:
            claim_output_dir(out, resume=True, overwrite=False)
    finally:
        locked.chmod(0o755)
    assert str(err.value) == (
        f"--output-dir {out} cannot be written: no permission to write in the folder {locked}"
    )
    assert snapshot(tmp_path) == before


def test_clear_run_deletes_only_the_run(tmp_path):
    make_run(tmp_path, 1, 2)
    (tmp_path / ".checkpoint-3.tmp").mkdir()
    (tmp_path / "config.json").write_text("{}")  # the final model of the earlier run: replaced
    (tmp_path / "notes.txt").write_text("mine")  # by the new run's save, never deleted here
    (tmp_path / "data").mkdir()
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "data", "notes.txt"]
    assert claim_output_dir(tmp_path, resume=False, overwrite=False) is None
    clear_run(tmp_path / "missing")  # nothing to clear


def test_write_checkpoint_renames_a_complete_folder(tmp_path):
    out = tmp_path / "run"
    path = write_checkpoint(out, 7, write_file("model.safetensors", "w7"))
    assert path == out / "checkpoint-7"
    assert (path / "model.safetensors").read_text() == "w7"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-7"]
    assert latest_checkpoint(out) == path


def test_rotation_deletes_the_lowest_steps_first(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, write_file("w", str(step)), save_total_limit=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4"]
    assert (tmp_path / "checkpoint-4" / "w").read_text() == "4"


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    make_run(tmp_path, 1, 2, 50, state=False)  # 50: from a longer run, higher than the new step
    write_checkpoint(tmp_path, 5, write_file("w", "5"), save_total_limit=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-5",
        "checkpoint-50",
    ]
    write_checkpoint(tmp_path, 6, write_file("w", "6"), save_total_limit=1)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-6"]


@pytest.mark.parametrize("limit", [None, 0])
def test_no_limit_keeps_every_checkpoint(tmp_path, limit):
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, write_file("w", str(step)), save_total_limit=limit)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert len(list(tmp_path.glob("checkpoint-*"))) == 3


def test_a_checkpoint_of_the_same_step_is_replaced(tmp_path):
    make_run(tmp_path, 3, state=False)
    (tmp_path / "checkpoint-3" / "stale.txt").write_text("old")
    write_checkpoint(tmp_path, 3, write_file("model.safetensors", "new"))
    assert sorted(p.name for p in (tmp_path / "checkpoint-3").iterdir()) == ["model.safetensors"]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").read_text() == "new"
    assert not list(tmp_path.glob(".*"))


def test_folders_of_an_interrupted_write_are_ignored_then_removed(tmp_path):
    make_run(tmp_path, 5, state=False)
    (tmp_path / ".checkpoint-7.tmp").mkdir()  # kill -9 while writing step 7
    (tmp_path / ".checkpoint-7.tmp" / "model.safetensors").write_text("half")
    (tmp_path / ".checkpoint-1.old.tmp").mkdir()  # kill -9 while rotating step 1 away
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-5"
    write_checkpoint(tmp_path, 7, write_file("model.safetensors", "whole"))
    assert not list(tmp_path.glob(".*"))
    assert (tmp_path / "checkpoint-7" / "model.safetensors").read_text() == "whole"


def test_a_failing_write_leaves_the_earlier_checkpoints_untouched(tmp_path):
    for step in (1, 2):
        write_checkpoint(tmp_path, step, write_file("w", str(step)))
    before = snapshot(tmp_path, with_root=False)

    def crash(folder: Path) -> None:
        (folder / "w").write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="^No space left on device$"):
        write_checkpoint(tmp_path, 3, crash, save_total_limit=1)
    # no checkpoint-3, no .tmp folder, nothing rotated away
    assert snapshot(tmp_path, with_root=False) == before
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_two_processes_write_one_checkpoint(tmp_path):
    """Two threads stand for two processes: each writes its own file, the main one renames."""
    write_checkpoint(tmp_path, 1, write_file("rank0.txt", "old"))
    barrier = threading.Barrier(2, timeout=60)
    waits: collections.Counter[int] = collections.Counter()
    during: dict[int, tuple] = {}
    after: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def process(rank: int) -> None:
        def wait() -> None:
            waits[rank] += 1
            barrier.wait()

        def write(folder: Path) -> None:
            during[rank] = (folder.name, folder.is_dir(), (tmp_path / "checkpoint-2").exists())
            (folder / f"rank{rank}.txt").write_text(f"from {rank}")

        try:
            path = write_checkpoint(
                tmp_path, 2, write, is_main=rank == 0, barrier=wait, save_total_limit=1
            )
            after[rank] = (path, path.is_dir(), (tmp_path / "checkpoint-1").exists())
        except BaseException as err:  # reported below, with the thread's traceback
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert waits == {0: 3, 1: 3}
    assert during == {rank: (".checkpoint-2.tmp", True, False) for rank in (0, 1)}
    # returns only once the folder is renamed and the old one rotated away, on every process
    assert after == {rank: (tmp_path / "checkpoint-2", True, False) for rank in (0, 1)}
    files = {p.name: p.read_text() for p in (tmp_path / "checkpoint-2").iterdir()}
    assert files == {"rank0.txt": "from 0", "rank1.txt": "from 1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_a_bad_step_is_refused_before_writing(tmp_path, step):
    with pytest.raises(InvalidInputError) as err:
        write_checkpoint(tmp_path / "run", step, write_file("w", ""))
    assert str(err.value) == f"checkpoint step must be an int >= 0, got {step!r}"
    assert not (tmp_path / "run").exists()


def test_atomic_write_text_replaces_the_file_whole(tmp_path):
    path = tmp_path / "run" / "trainer_state.json"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second, ünïcode\n")
    assert path.read_bytes() == "second, ünïcode\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["trainer_state.json"]
