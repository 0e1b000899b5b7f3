"""Sliding-window perplexity (``gpt2_dual.train.evaluate``) against transformers' guide.

The reference is the loop of transformers' "Perplexity of fixed-length models"
(``docs/source/en/perplexity.md``), as printed there, run on transformers' own
``GPT2LMHeadModel``; ours runs gpt2_dual.pt and gpt2_dual.tf models loaded from the folder
that model was saved to. The text is the start of the committed corpus (The Tempest).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from frameworks import has
from gpt2_dual import GPT2TokenizerFast
from gpt2_dual.errors import InvalidInputError, OutOfRangeError
from gpt2_dual.train.evaluate import (
    EvalResult,
    model_nll_sum,
    perplexity,
    window_batches,
    windows,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "text" / "corpus.txt"
N_POSITIONS = 64
REL = 1e-4  # the issue's target: transformers' perplexity within 1e-4 relative
#: (block_size, stride, number of tokens): overlapping windows, disjoint windows (the last one
#: short), one window for a text shorter than a block.
CASES = {
    "stride<block": (32, 12, None),
    "stride==block": (32, 32, None),
    "shorter-than-a-block": (64, 64, 40),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny transformers GPT2LMHeadModel (real vocabulary, wide random weights, dropout on:
    evaluation must turn it off) saved with transformers' ``save_pretrained``."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=48, n_head=4, n_layer=3, n_positions=N_POSITIONS, initializer_range=0.2
    )
    path = tmp_path_factory.mktemp("hf_lm")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    """About 270 tokens of English: the corpus's first 800 characters."""
    text = CORPUS.read_text(encoding="utf-8")[:800]
    return np.asarray(GPT2TokenizerFast.from_pretrained("gpt2").encode(text), dtype=np.int64)


@pytest.fixture(scope="module")
def reference(folder):
    """transformers' guide, on transformers' model: ``(ppl, avg_nll, n_tokens)``."""
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    done: dict[tuple[bytes, int, int], tuple[float, float, int]] = {}

    def cached(ids: np.ndarray, max_length: int, stride: int) -> tuple[float, float, int]:
        key = (ids.tobytes(), max_length, stride)
        if key not in done:
            done[key] = guide(ids, max_length, stride)
        return done[key]

    def guide(ids: np.ndarray, max_length: int, stride: int) -> tuple[float, float, int]:
        encodings_input_ids = torch.from_numpy(ids)[None]
        seq_len = encodings_input_ids.size(1)
        nll_sum = 0.0
        n_tokens = 0
        prev_end_loc = 0
        for begin_loc in range(0, seq_len, stride):
            end_loc = min(begin_loc + max_length, seq_len)
            trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
            input_ids = encodings_input_ids[:, begin_loc:end_loc]
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                outputs = model(input_ids, labels=target_ids)
                neg_log_likelihood = outputs.loss
            num_valid_tokens = (target_ids != -100).sum().item()
            batch_size = target_ids.size(0)
            num_loss_tokens = num_valid_tokens - batch_size
            nll_sum += neg_log_likelihood * num_loss_tokens
            n_tokens += num_loss_tokens
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
        avg_nll = nll_sum / n_tokens
        return torch.exp(avg_nll).item(), avg_nll.item(), n_tokens

    return cached


@pytest.fixture(scope="module", params=["pt", "tf"])
def ours(request, folder):
    """``nll_sum`` of gpt2_dual's model (the framework of the parameter) from the folder."""
    if not has({"pt": "torch", "tf": "tensorflow"}[request.param]):
        pytest.skip(f"{request.param}: framework not installed")
    if request.param == "pt":
        import gpt2_dual.pt as gpt
    else:
        import gpt2_dual.tf as gpt
    return model_nll_sum(gpt.GPT2LMHeadModel.from_pretrained(folder))


def test_windows_are_the_guides():
    assert windows(10, block_size=4, stride=2) == [(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert windows(10, block_size=4, stride=4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert windows(3, block_size=8, stride=8) == [(0, 3, 3)]
    assert windows(0, block_size=8, stride=2) == []


@pytest.mark.parametrize("n", [1, 2, 7, 16, 17, 31])
def test_windows_score_every_token_once(n):
    for block_size in range(1, 9):
        for stride in range(1, block_size + 1):
            spans = windows(n, block_size=block_size, stride=stride)
            scored = [t for _, end, trg_len in spans for t in range(end - trg_len, end)]
            assert scored == list(range(n))
            assert all(0 < end - begin <= block_size for begin, end, _ in spans)
            assert [begin for begin, _, _ in spans] == list(range(0, stride * len(spans), stride))


def test_window_batches_keep_order_and_share_shapes():
    spans = windows(49, block_size=8, stride=3)  # (length, trg_len): (8, 8), 13 x (8, 3), (7, 2)
    batches = window_batches(spans, 4)
    assert [w for batch in batches for w in batch] == spans
    assert [len(b) for b in batches] == [1, 4, 4, 4, 1, 1]
    for batch in batches:
        assert len({(end - begin, trg_len) for begin, end, trg_len in batch}) == 1


@pytest.mark.parametrize("case", CASES)
def test_perplexity_equals_transformers_guide(case, ours, tokens, reference):
    block_size, stride, n = CASES[case]
    ids = tokens[:n]
    ppl, avg_nll, n_tokens = reference(ids, block_size, stride)
    result = perplexity(ids, ours, block_size=block_size, stride=stride)
    assert result.tokens == n_tokens
    assert result.perplexity == pytest.approx(ppl, rel=REL)
    assert result.loss == pytest.approx(avg_nll, rel=REL)
    assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-12)


def test_batches_of_windows_give_the_same_result(ours, tokens):
    one = perplexity(tokens[:120], ours, block_size=32, stride=12, batch_size=1)
    for batch_size in (4,):
        batched = perplexity(tokens[:120], ours, block_size=32, stride=12, batch_size=batch_size)
        assert batched.tokens == one.tokens
        assert batched.loss == pytest.approx(one.loss, rel=1e-6)  # float32 batching, no more


def test_a_window_with_nothing_to_predict_adds_nothing(tokens, reference, folder):
    """65 tokens in windows of 32: the guide's last window is one token, whose mean loss is
    nan (times a weight of 0); ours leaves it out, as the 64-token text has it."""
    import gpt2_dual.pt as gpt

    nll = model_nll_sum(gpt.GPT2LMHeadModel.from_pretrained(folder))
    assert math.isnan(reference(tokens[:65], 32, 32)[0])
    assert perplexity(tokens[:65], nll, block_size=32, stride=32) == perplexity(
        tokens[:64], nll, block_size=32, stride=32
    )


def test_a_model_in_training_mode_is_evaluated_without_dropout_and_left_training(folder, tokens):
    import gpt2_dual.pt as gpt

    model = gpt.GPT2LMHeadModel.from_pretrained(folder)
    assert model.config.resid_pdrop > 0
    evaluated = perplexity(tokens[:100], model_nll_sum(model.eval()), block_size=32, stride=16)
    model.train()
    assert perplexity(tokens[:100], model_nll_sum(model), block_size=32, stride=16) == evaluated
    assert model.training


def test_progress_is_reported_before_each_batch(tokens):
    seen = []

    def nll_sum(window_ids: np.ndarray, trg_len: int) -> tuple[float, int]:
        return 2.0 * window_ids.shape[0] * trg_len, window_ids.shape[0] * trg_len

    result = perplexity(
        tokens[:49], nll_sum, block_size=8, stride=3, batch_size=4,
        on_batch=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen == [(0, 15), (1, 15), (5, 15), (9, 15), (13, 15), (14, 15)]
    assert result == EvalResult(loss=2.0, perplexity=math.exp(2.0), tokens=49 - 15)


@pytest.mark.parametrize(
    ("ids", "options", "error", "message"),
    [
        ([7], {}, InvalidInputError, "perplexity needs at least 2 tokens; got 1"),
        ([[7, 8]], {}, InvalidInputError, "tokens must be 1-D token ids; got shape (1, 2)"),
        ([7, 8], {"block_size": 1, "stride": 1}, OutOfRangeError,
         "block_size=1 is out of range: at least 2"),
        ([7, 8], {"stride": 0}, OutOfRangeError, "stride=0 is out of range: 1 to block_size=4"),
        ([7, 8], {"stride": 5}, OutOfRangeError, "stride=5 is out of range: 1 to block_size=4"),
        ([7, 8], {"batch_size": 0}, OutOfRangeError, "batch_size=0 is out of range: at least 1"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_by_name(ids, options, error, message):
    options = {"block_size": 4, "stride": 2, **options}
    with pytest.raises(error) as info:
        perplexity(np.asarray(ids), lambda w, t: (0.0, 0), **options)
    assert str(info.value) == message


def test_model_nll_sum_refuses_other_models():
    with pytest.raises(TypeError, match="gpt2_dual.pt or gpt2_dual.tf GPT2LMHeadModel; got "):
        model_nll_sum(torch.nn.Linear(2, 2))
