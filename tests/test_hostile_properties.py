"""Property tests: any integer array of random shape and values, given as ``input_ids`` (or as
``attention_mask``/``position_ids``), either runs or raises a gpt2_dual error, never an
internal one (a torch ``IndexError``, a TF ``InvalidArgumentError``, a silent wrap)."""

from __future__ import annotations

import numpy as np
import pytest

from cases import tiny_config
from frameworks import FRAMEWORKS, random_state
from gpt2_dual.errors import GPT2DualError

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
hnp = pytest.importorskip("hypothesis.extra.numpy")

SETTINGS = hypothesis.settings(max_examples=20, deadline=None, derandomize=True)
_MODELS: dict = {}


def lm(fw):
    if fw.name not in _MODELS:
        config = tiny_config(pad_token_id=98)
        _MODELS[fw.name] = fw.build("lm", config, random_state(config, "lm"))
    return _MODELS[fw.name]


int_arrays = hnp.arrays(
    dtype=st.sampled_from([np.int32, np.int64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    elements=st.integers(-3, 102),
)


def runs_or_gpt2_dual_error(fw, **inputs) -> None:
    try:
        out = fw.run(lm(fw), **inputs)
    except GPT2DualError:
        return
    assert np.all(np.isfinite(out["logits"]))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_any_int_array_as_input_ids(fw):
    @SETTINGS
    @hypothesis.given(int_arrays)
    def check(array):
        runs_or_gpt2_dual_error(fw, input_ids=array)

    check()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_any_mask_and_positions(fw):
    @SETTINGS
    @hypothesis.given(
        hnp.arrays(np.int64, st.tuples(st.integers(1, 2), st.integers(1, 6)), elements=st.integers(-2, 3)),
        hnp.arrays(np.int64, st.tuples(st.integers(1, 2), st.integers(1, 6)), elements=st.integers(-2, 26)),
    )
    def check(mask, positions):
        ids = np.ones(mask.shape, np.int64)
        runs_or_gpt2_dual_error(fw, input_ids=ids, attention_mask=mask)
        runs_or_gpt2_dual_error(fw, input_ids=ids, position_ids=positions)

    check()
