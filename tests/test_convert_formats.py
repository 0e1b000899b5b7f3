"""Every writable format to every writable format, cross-checked and bit exact; a Hub repo id
as the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cases import tiny_config
from frameworks import PT, random_state
from gpt2_dual.convert import formats
from gpt2_dual.convert.conversion import convert
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("h5py")

WRITABLE = [name for name, spec in formats.FORMATS.items() if spec.writable]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One tied GPT2LMHeadModel checkpoint (random, non-symmetric) in every writable format."""
    root = tmp_path_factory.mktemp("formats")
    config = tiny_config()
    PT.build("lm", config, random_state(config, "lm")).save_pretrained(root / "hf")
    found = {"hf": root / "hf"}
    for name in WRITABLE[1:]:
        convert(root / "hf", root / name, to=name, verify=False)
        found[name] = root / name
    return found


@pytest.mark.parametrize("to", WRITABLE)
@pytest.mark.parametrize("src", WRITABLE)
def test_every_format_pair_is_checked_and_bit_exact(sources, tmp_path, src, to):
    assert formats.detect(sources[src]) == src
    # The source's gpt2_dual.tf side depends on the source alone (its canonical weights, the
    # same inputs), not on the target: it runs once per source, when converting it to itself.
    # The result runs in both frameworks for every pair.
    report = convert(sources[src], tmp_path / "out", to=to, source_in_tf=src == to)
    assert report.ok, report.table()
    sides = {"result pt", "result tf"} | ({"source tf"} if src == to else set())
    assert {c.side for c in report.outputs} == sides
    assert formats.detect(tmp_path / "out") == to
    expected, result = formats.read(sources["hf"]).view, formats.read(tmp_path / "out").view
    assert sorted(result.keys()) == sorted(expected.keys())
    for name in expected.keys():
        np.testing.assert_array_equal(result[name], expected[name], err_msg=name)


def test_a_hub_repo_id_is_a_source(hub, sources, tmp_path):
    files = {p.name: p.read_bytes() for p in sources["hf"].iterdir() if p.is_file()}
    hub.add_repo("me/tiny-gpt2", files)
    report = convert("me/tiny-gpt2", tmp_path / "out", to="keras")
    assert report.ok and formats.detect(tmp_path / "out") == "keras"
    expected, result = formats.read(sources["hf"]).view, formats.read(tmp_path / "out").view
    for name in expected.keys():
        np.testing.assert_array_equal(result[name], expected[name], err_msg=name)
