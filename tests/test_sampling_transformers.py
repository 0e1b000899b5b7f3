"""gpt2_dual.pt sampling against transformers' ``generate`` token for token, with the same seed.

Both draw with ``torch.multinomial`` in the same order: sampling draws one token per row per
step from ``softmax(scores)`` of all rows at once (transformers' ``_sample``), beam sampling
draws ``C`` candidates without replacement from ``softmax`` of the accumulated scores of each
prompt's beams (``_get_top_k_continuations``). So with one seed the same random numbers meet
the same probabilities, and the tokens are equal, not only equally distributed. transformers
draws from the global generator (``torch.manual_seed``); gpt2_dual from ``seed=`` (a fresh
``torch.Generator`` with that seed, the same stream) or, without one, the global generator too.
The probabilities differ by float32 rounding only (1e-6), which could change a draw only where
two candidates' draws are that close; the seeds here are fixed, so a pass never moves.

CPU only: transformers runs on the CPU here, and a CUDA generator draws another stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from cases import assert_close
from frameworks import PT
from generation_ref import reference_checkpoint, reference_generate, scores_equal

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, POSITIONS, EOS = 97, 48, 96
PROMPT = np.array([[5, 17, 42, 8, 61, 23], [70, 3, 3, 19, 88, 41]], dtype=np.int64)
SEED, NEW = 4, 6


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sampling_ref")
    return reference_checkpoint(folder, vocab=VOCAB, positions=POSITIONS, eos=EOS, init=0.3), folder


@pytest.fixture(scope="module")
def ours(reference):
    return PT.load("lm", reference[1])


def theirs(reference, seed: int, **kwargs):
    torch.manual_seed(seed)
    return reference_generate(reference[0], PROMPT, **kwargs)


def sampled_token(reference, row: int, step: int) -> int:
    """The token plain sampling with ``SEED`` draws at ``step`` of ``row``: as an eos id it
    ends that row there."""
    out = theirs(reference, SEED, do_sample=True, top_k=0, max_new_tokens=step + 1,
                 eos_token_id=None, pad_token_id=0)  # fmt: skip
    return int(out[row, PROMPT.shape[1] + step])


CASES = {
    "plain": dict(top_k=0),
    "temperature": dict(temperature=0.7, top_k=0),
    "top_k": dict(top_k=5),
    "top_p": dict(top_p=0.8, top_k=0),
    "typical_p": dict(typical_p=0.6, top_k=0),
    "all_filters": dict(temperature=1.3, top_k=20, top_p=0.9, typical_p=0.9),
    "return_3": dict(num_return_sequences=3, top_p=0.9, temperature=0.8),
    "penalties": dict(repetition_penalty=1.4, no_repeat_ngram_size=2, top_k=10),
    "beam_sample": dict(num_beams=3, top_k=0),
    "beam_sample_return_2": dict(num_beams=3, num_return_sequences=2, temperature=0.8, top_k=10,
                                 top_p=0.9, length_penalty=0.5),
}  # fmt: skip


def _assert_same_generation(got, expected, beams: bool) -> None:
    np.testing.assert_array_equal(got.sequences, expected.sequences.numpy())
    assert len(got.scores) == len(expected.scores)
    for step, (a, b) in enumerate(zip(got.scores, expected.scores, strict=True)):
        scores_equal(a, b.numpy(), what=f"scores of step {step}")
    if beams:
        np.testing.assert_array_equal(got.beam_indices, expected.beam_indices.numpy())
        assert_close(got.sequences_scores, expected.sequences_scores.numpy(),
                     what="sequences_scores")  # fmt: skip


def _some_draw_is_not_the_argmax(out) -> bool:
    """Sampling without beams: a chosen token is not the best-scored one at some step (so the
    comparison is not one of two greedy decodings)."""
    start = PROMPT.shape[1]
    return any(
        (out.sequences[:, start + step] != np.asarray(s).argmax(-1)).any()
        for step, s in enumerate(out.scores)
    )


@pytest.mark.parametrize("case", CASES)
def test_sampling_equals_transformers_with_the_same_seed(ours, reference, case):
    kwargs = dict(do_sample=True, max_new_tokens=NEW, eos_token_id=None, pad_token_id=0,
                  return_dict_in_generate=True, output_scores=True, **CASES[case])  # fmt: skip
    expected = theirs(reference, SEED, **kwargs)
    got = PT.generate(ours, PROMPT, seed=SEED, **kwargs)
    beams = kwargs.get("num_beams", 1) > 1
    _assert_same_generation(got, expected, beams)
    if not beams:
        assert _some_draw_is_not_the_argmax(got), "every draw was the argmax: nothing compared"
        kept = [np.isfinite(s).sum(-1).min() for s in got.scores]
        assert max(kept) > 1, "the filters left one token: nothing was sampled"


def test_global_seed_draws_as_transformers(ours, reference):
    """``torch.manual_seed(s); model.generate(do_sample=True)``, transformers' idiom, without
    ``seed=``: the global generator gives the same tokens."""
    kwargs = dict(do_sample=True, top_p=0.9, max_new_tokens=NEW, eos_token_id=None,
                  pad_token_id=0)  # fmt: skip
    expected = theirs(reference, SEED + 1, **kwargs)
    torch.manual_seed(SEED + 1)
    np.testing.assert_array_equal(PT.generate(ours, PROMPT, **kwargs), expected)
    other = PT.generate(ours, PROMPT, seed=SEED + 2, **kwargs)
    assert (other != expected).any(), "another seed drew the same tokens"


def test_sampled_rows_end_at_eos_as_transformers(ours, reference):
    """Row 0 draws ``eos`` at its third step and is padded after; row 1 goes on, and its draws
    stay aligned with transformers' (finished rows still take part in each draw)."""
    eos = sampled_token(reference, row=0, step=2)
    kwargs = dict(do_sample=True, top_k=0, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0,
                  return_dict_in_generate=True, output_scores=True)  # fmt: skip
    expected = theirs(reference, SEED, **kwargs)
    seq = expected.sequences.numpy()
    end = PROMPT.shape[1] + 2
    assert seq[0, end] == eos and (seq[0, end + 1 :] == 0).all(), seq
    _assert_same_generation(PT.generate(ours, PROMPT, seed=SEED, **kwargs), expected, False)


def test_beam_sampling_keeps_a_token_per_eos_as_transformers(ours, reference):
    """With two eos ids beam sampling keeps at least 3 tokens per beam (transformers'
    ``min_tokens_to_keep = len(eos) + 1``): ``top_k=2`` keeps 3."""
    eos = [EOS, sampled_token(reference, row=0, step=1)]
    kwargs = dict(do_sample=True, num_beams=2, top_k=2, max_new_tokens=NEW, eos_token_id=eos,
                  pad_token_id=0, return_dict_in_generate=True, output_scores=True)  # fmt: skip
    expected = theirs(reference, SEED, **kwargs)
    assert {int(np.isfinite(s.numpy()).sum(-1).max()) for s in expected.scores} == {3}
    _assert_same_generation(PT.generate(ours, PROMPT, seed=SEED, **kwargs), expected, True)


@pytest.mark.parametrize(
    "options",
    [dict(top_p=0.9), dict(num_return_sequences=2, temperature=0.7, top_k=0),
     dict(num_beams=2, top_k=10)],
    ids=["sample", "return_2", "beam_sample"],
)  # fmt: skip
def test_left_padded_sampling_equals_transformers(ours, reference, options):
    """Left padding (no history processors here: transformers counts pad tokens in those)."""
    ids = PROMPT.copy()
    ids[0, :3] = 0
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    kwargs = dict(do_sample=True, max_new_tokens=NEW, eos_token_id=None, pad_token_id=0,
                  **options)  # fmt: skip
    torch.manual_seed(SEED)
    expected = reference_generate(reference[0], ids, mask, **kwargs)
    np.testing.assert_array_equal(PT.generate(ours, ids, mask, seed=SEED, **kwargs), expected)
