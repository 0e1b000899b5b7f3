"""Conversions that prove themselves (``gpt2_dual.convert.conversion``), on transformers folders.

Round trips per head and dtype, the cross-check's report, a conversion refused when one tensor
is wrong (the check can fail), atomic placement, ``--head``, and transformers 4.57 loading what
we write. Format-specific readers and writers have their own test files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cases import HEADS, assert_close, tiny_config
from frameworks import PT, random_state
from gpt2_dual.checkpoint import safetensors_io
from gpt2_dual.convert import conversion, formats, hf_format
from gpt2_dual.convert.conversion import ConversionError, convert, open_source, with_head
from gpt2_dual.convert.crosscheck import TOLERANCES, fixed_inputs
from gpt2_dual.heads import HEAD_SPECS

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def save_source(folder: Path, head: str = "lm", **changes) -> Path:
    """A gpt2_dual.pt checkpoint of ``head`` with random, non-symmetric weights."""
    config = tiny_config(**changes)
    PT.build(head, config, random_state(config, head)).save_pretrained(folder)
    return folder


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if conversion.TMP_MARK in p.name]


@pytest.mark.parametrize("head", HEADS)
def test_round_trip_is_bit_exact_and_the_report_passes(tmp_path, head):
    src = save_source(tmp_path / "src", head)
    report = convert(src, tmp_path / "dst")
    assert report.ok, report.table()
    sides = {(c.side, c.model, c.output) for c in report.outputs}
    for side in ("source tf", "result pt", "result tf"):
        assert (side, "GPT2Model", "last_hidden_state") in sides
        for output in HEAD_SPECS[head].outputs:
            if output != "last_hidden_state":
                assert (side, HEAD_SPECS[head].class_name, output) in sides
    assert all(c.max_abs == 0.0 for c in report.outputs if c.side == "result pt")
    source, result = formats.read(src), formats.read(tmp_path / "dst")
    assert result.head == head and sorted(result.view.keys()) == sorted(source.view.keys())
    for name in source.view.keys():
        np.testing.assert_array_equal(result.view[name], source.view[name])
    assert (report.greedy != []) == (head == "lm")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_dtype_conversion_is_checked_with_that_dtypes_tolerance(tmp_path, dtype):
    name = formats.DTYPES[dtype]
    src = save_source(tmp_path / "src")
    report = convert(src, tmp_path / "dst", dtype=dtype)
    assert report.ok and report.dtype == name and report.tolerance == TOLERANCES[name]
    assert f"weights stored as {name}" in report.table()
    result, source = formats.read(tmp_path / "dst"), formats.read(src)
    for key in source.view.keys():
        assert safetensors_io.dtype_name(result.view[key]) == name
        expected = safetensors_io.cast(source.view[key], name)
        np.testing.assert_array_equal(result.view[key].view(np.uint16), expected.view(np.uint16))
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["dtype"] == name


def test_transformers_loads_what_we_write_sharded_and_in_bfloat16(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    src = save_source(tmp_path / "src")
    convert(src, tmp_path / "sharded", max_shard_size="20KB")
    convert(src, tmp_path / "bf16", dtype="bf16")
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    inputs = fixed_inputs(tiny_config(), "lm")
    mask = inputs["attention_mask"][..., None] > 0
    for folder in ("sharded", "bf16"):  # both read in float32 (not "auto"): the same numbers
        model = PT.load("lm", tmp_path / folder).float()
        ours = PT.run(model, **inputs)["logits"]
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / folder).float().eval()
        assert next(theirs.parameters()).dtype == torch.float32
        with torch.no_grad():  # positions from the mask, as gpt2_dual derives them
            position_ids = torch.from_numpy(np.maximum(inputs["attention_mask"].cumsum(-1) - 1, 0))
            out = theirs(input_ids=torch.from_numpy(inputs["input_ids"]), position_ids=position_ids,
                         attention_mask=torch.from_numpy(inputs["attention_mask"])).logits.numpy()
        assert_close(np.where(mask, out, 0), np.where(mask, ours, 0), "float32", f"{folder} logits")


def _transpose_one_tensor(monkeypatch, name: str) -> None:
    """A writer bug: ``name`` written transposed (a square matrix, so shapes still fit)."""
    original = hf_format.entries

    def faulty(source, dtype):
        rows = original(source, dtype)
        for i, row in enumerate(rows):
            if row.key.endswith(name):
                rows[i] = safetensors_io.Entry(row.key, row.shape, row.code,
                                               lambda g=row.get: np.ascontiguousarray(g().T))
        return rows

    monkeypatch.setattr(hf_format, "entries", faulty)


def test_a_wrong_tensor_refuses_the_conversion_and_names_the_outputs(tmp_path, monkeypatch):
    src = save_source(tmp_path / "src")
    _transpose_one_tensor(monkeypatch, "h.1.attn.c_proj.weight")
    with pytest.raises(ConversionError) as info:
        convert(src, tmp_path / "dst", report_path=tmp_path / "report.json")
    failed = {(c.side, c.model, c.output) for c in info.value.report.failures()}
    assert failed == {
        (side, model, output)
        for side in ("result pt", "result tf")
        for model, output in (("GPT2Model", "last_hidden_state"), ("GPT2LMHeadModel", "logits"))
    }
    assert str(info.value).startswith(
        "conversion refused: the result does not match the source (result pt "
        "GPT2Model.last_hidden_state, result pt GPT2LMHeadModel.logits, result tf "
        "GPT2Model.last_hidden_state, result tf GPT2LMHeadModel.logits); nothing was written"
    )
    assert "MISMATCH" in str(info.value) and "verdict: FAIL" in str(info.value)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] is False and len(saved["outputs"]) == 6
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == []


def test_a_failed_conversion_leaves_an_existing_destination_untouched(tmp_path, monkeypatch):
    src = save_source(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"dst exists; pass --overwrite"):
        convert(src, dst)
    _transpose_one_tensor(monkeypatch, "h.0.attn.c_proj.weight")
    with pytest.raises(ConversionError):
        convert(src, dst, overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["mine.txt"] and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert convert(src, dst, overwrite=True).ok
    assert not (dst / "mine.txt").exists() and (dst / "model.safetensors").is_file()
    assert leftovers(tmp_path) == []


def test_check_fails_when_one_framework_loads_a_tensor_wrongly(tmp_path, monkeypatch):
    import gpt2_dual.tf.weights as tf_weights

    src = open_source(save_source(tmp_path / "src"))
    assert conversion.check(src).ok
    assign = tf_weights._assign

    def transposed(model, row, value):  # a Keras-side bug on a square matrix
        if row.canonical == "h.0.attn.c_proj.weight":
            value = np.ascontiguousarray(np.asarray(value).T)
        assign(model, row, value)

    monkeypatch.setattr(tf_weights, "_assign", transposed)
    report = conversion.check(src)
    assert not report.ok
    assert {(c.side, c.output) for c in report.failures()} == {
        ("source tf", "last_hidden_state"), ("source tf", "logits")
    }


def test_head_choice(tmp_path):
    src = save_source(tmp_path / "src", "lm")
    source = open_source(src)
    assert with_head(source, "auto") is source
    convert(src, tmp_path / "base", head="base")
    assert formats.read(tmp_path / "base").head == "base"
    with pytest.raises(ValueError) as info:
        with_head(source, "seq-cls")
    assert str(info.value) == (
        "--head sequence_classification: the checkpoint was saved from GPT2LMHeadModel and has "
        "no score.weight weights; heads it can give: base, lm"
    )
    with pytest.raises(ValueError, match=r"^unknown head 'nope'; choose one of auto, base, lm"):
        with_head(source, "nope")


def test_unknown_target_format_and_dtype_are_refused_before_any_work(tmp_path):
    src = save_source(tmp_path / "src")
    with pytest.raises(formats.FormatError, match=r"^cannot write format 'openai'; writable"):
        convert(src, tmp_path / "a", to="openai")
    with pytest.raises(ValueError, match=r"^dtype 'fp8' is not one of fp32, fp16, bf16$"):
        convert(src, tmp_path / "b", dtype="fp8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_detect_names_what_it_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(formats.FormatError, match=r"is not a GPT-2 checkpoint gpt2_dual can read"):
        formats.detect(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no-such does not exist$"):
        formats.detect(tmp_path / "no-such")


def test_a_killed_conversion_leaves_no_output_and_the_next_one_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    src = save_source(tmp_path / "src")
    code = (
        "import sys, time\n"
        "from gpt2_dual.convert import formats\n"
        "def stall(*args, **kwargs): time.sleep(120)\n"  # writing never ends
        "formats.write = stall\n"
        "from gpt2_dual.convert import convert\n"
        "convert(sys.argv[1], sys.argv[2])\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(src), str(tmp_path / "dst")])
    for _ in range(600):
        if leftovers(tmp_path):
            break
        time.sleep(0.05)
    (name,) = leftovers(tmp_path)
    assert name.startswith(f".dst{conversion.TMP_MARK}{child.pid}-")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == [name]
    assert convert(src, tmp_path / "dst").ok
    assert leftovers(tmp_path) == [] and (tmp_path / "dst" / "model.safetensors").is_file()
