"""Everyday habits of transformers users, against transformers 4.57 itself: ``pad``, the data
collators and a ``DataLoader`` ``collate_fn``, and ``BatchEncoding``'s attributes.

(``encode``'s keywords and adding tokens: test_tokenizer_encode.py; vocabularies without every
byte token: test_tokenizer_toy_vocab.py.)"""

from __future__ import annotations

import copy
import logging
import pickle

import numpy as np
import pytest
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import BUNDLED, EOT, hf_tokenizers

CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]
TEXTS = ["Hello world, this is a longer sentence.", "Hi", "", "Three short words"]
TENSOR_TYPES = [None, "np", "pt", "tf"]
EOT_ID = 50256
PAD_NOT_SET = "Asking to pad but the tokenizer does not have a padding token"


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


@pytest.fixture(scope="module")
def refs():
    """transformers' (slow, fast) GPT-2 tokenizers with pad_token = eos_token."""
    slow, fast = hf_tokenizers(pad_token=EOT)
    fast.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # quiet log line
    return slow, fast


@pytest.fixture(scope="module")
def padded():
    """One of ours per class, with pad_token = eos_token."""
    return {c: c.from_pretrained(BUNDLED, pad_token=EOT) for c in CLASSES}


@pytest.fixture
def side():
    """Set padding_side on every tokenizer given, and put "right" back afterwards."""
    tokenizers = []

    def set_side(value, *toks):
        tokenizers.extend(toks)
        for tok in toks:
            tok.padding_side = value

    yield set_side
    for tok in tokenizers:
        tok.padding_side = "right"


def outcome(fn):
    """``fn()``, or the type of the ValueError it raised. transformers' numpy arrays of ragged
    rows (dtype object) count as that error: ours raise it rather than make them."""
    try:
        result = fn()
    except ValueError:
        return ValueError
    if any(getattr(v, "dtype", None) is np.dtype(object) for v in result.values()):
        return ValueError
    return result


def assert_same(ours, theirs, what=""):
    """Same keys, values, container/tensor types and dtypes (or the same ValueError)."""
    if theirs is ValueError or ours is ValueError:
        assert ours is theirs, what
        return
    assert type(ours).__name__ == type(theirs).__name__, what  # BatchEncoding, or dict
    assert set(ours) == set(theirs), what
    for key in theirs:
        a, b = ours[key], theirs[key]
        assert type(a) is type(b), f"{what} {key}: {type(a)} != {type(b)}"
        if hasattr(b, "dtype"):
            assert a.dtype == b.dtype, f"{what} {key}"
            assert np.asarray(a).shape == np.asarray(b).shape, f"{what} {key}"
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{what} {key}"
        else:
            assert a == b, f"{what} {key}"


# ----- pad --------------------------------------------------------------------------------


def tensor_fn(kind):
    """A function making a 1-D int tensor of ``kind`` from a list (the types datasets give)."""
    if kind == "np":
        return np.asarray
    if kind == "pt":
        torch = pytest.importorskip("torch")
        return lambda v: torch.tensor(v, dtype=torch.int64)
    tf = pytest.importorskip("tensorflow")
    return lambda v: tf.constant(v, dtype=tf.int64)


def pad_input(form, tok):
    """``pad``'s input in one of the forms users and collators pass (fresh each time:
    transformers' ``pad`` writes into a single dict it is given)."""
    encodings = [tok(t) for t in TEXTS]
    rows = [dict(e) for e in encodings]
    if form == "list_of_encodings":
        return encodings
    if form == "list_of_dicts":
        return rows
    if form == "dict_of_lists":
        return {k: [r[k] for r in rows] for k in rows[0]}
    if form == "one_encoding":
        return tok(TEXTS[1])
    if form == "padded_pt_batch":  # a (B, T) batch padded once already, to pad again
        pytest.importorskip("torch")
        return tok(TEXTS, padding=True, return_tensors="pt")
    if form == "ids_only":
        return [{"input_ids": r["input_ids"]} for r in rows]
    if form == "extra_keys":
        return [
            {
                **r,
                "token_type_ids": [0] * len(r["input_ids"]),
                "special_tokens_mask": [0] * len(r["input_ids"]),
                "label": i % 2,
                "score": i / 4,
            }
            for i, r in enumerate(rows)
        ]
    make = tensor_fn(form)
    return [{k: make(v) for k, v in r.items()} for r in rows]


PAD_FORMS = [
    "list_of_encodings",
    "list_of_dicts",
    "dict_of_lists",
    "one_encoding",
    "padded_pt_batch",
    "ids_only",
    "extra_keys",
    "np",
    "pt",
    "tf",
]
PAD_OPTIONS = [
    dict(),
    dict(padding="longest", pad_to_multiple_of=8),
    dict(padding="max_length", max_length=12),
    dict(padding="max_length", max_length=10, pad_to_multiple_of=4),
    dict(padding="max_length", max_length=3),  # rows longer than max_length are not cut
    dict(padding=False),
    dict(padding=True, padding_side="left"),
]


@pytest.mark.parametrize("return_tensors", TENSOR_TYPES)
@pytest.mark.parametrize("form", PAD_FORMS)
@pytest.mark.parametrize("tokenizer_side", ["right", "left"])
def test_pad_matches_transformers(cls, refs, padded, side, form, return_tensors, tokenizer_side):
    ours, theirs = padded[cls], refs[1]
    side(tokenizer_side, ours, theirs)
    for options in PAD_OPTIONS:
        options = dict(options, return_tensors=return_tensors)
        expected = outcome(lambda o=options: theirs.pad(pad_input(form, theirs), **o))
        got = outcome(lambda o=options: ours.pad(pad_input(form, ours), **o))
        assert_same(got, expected, f"{form} {options}")


def test_pad_max_length_defaults_to_model_max_length(cls, refs, padded):
    ours, theirs = padded[cls], refs[1]
    got = ours.pad(pad_input("list_of_dicts", ours), padding="max_length", return_tensors="np")
    assert got["input_ids"].shape == (len(TEXTS), 1024)
    assert_same(
        got,
        theirs.pad(pad_input("list_of_dicts", theirs), padding="max_length", return_tensors="np"),
    )


def test_pad_without_attention_mask(cls, refs, padded):
    ours, theirs = padded[cls], refs[1]
    for make in (lambda t: pad_input("ids_only", t), lambda t: {"input_ids": t.encode("Hi")}):
        for mask in (None, False, True):
            expected = theirs.pad(make(theirs), return_attention_mask=mask, pad_to_multiple_of=4)
            got = ours.pad(make(ours), return_attention_mask=mask, pad_to_multiple_of=4)
            assert_same(got, expected, str(mask))
    # transformers keeps a given mask unpadded here (ragged); ours leaves it out, as asked.
    got = ours.pad(pad_input("list_of_dicts", ours), return_attention_mask=False)
    assert set(got) == {"input_ids"}


def test_pad_leaves_its_input_alone(cls, padded):
    """transformers' ``pad`` adds ``attention_mask`` to a single dict it is given; ours does not."""
    ours = padded[cls]
    single = {"input_ids": [1, 2, 3]}
    batch = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    kept = copy.deepcopy((single, batch))
    ours.pad(single, pad_to_multiple_of=8)
    ours.pad(batch, padding_side="left")
    assert (single, batch) == kept


def test_pad_errors(cls, refs, padded):
    ours, theirs = padded[cls], refs[1]
    messages = []
    for tok in (cls.from_pretrained(BUNDLED), hf_tokenizers()[1]):  # no pad token
        with pytest.raises(ValueError, match=PAD_NOT_SET) as info:
            tok.pad(pad_input("list_of_dicts", tok))
        messages.append(str(info.value))
        assert tok.pad(pad_input("list_of_dicts", tok), padding=False)["input_ids"][1] == [17250]
    for tok in (ours, theirs):
        with pytest.raises(ValueError, match="that includes input_ids, but you provided") as info:
            tok.pad([{"attention_mask": [1]}])
        messages.append(str(info.value))
    assert messages[0] == messages[1] and messages[2] == messages[3]
    with pytest.raises(ValueError, match="type of 'a' unknown"):
        ours.pad({"input_ids": ["a", "b"]})
    with pytest.raises(
        TypeError, match="pad takes a BatchEncoding, a dict of lists or a list of dicts"
    ):
        ours.pad([[1, 2], [3]])
    with pytest.raises(ValueError, match="pad got an empty list"):
        ours.pad([])
    with pytest.raises(
        ValueError, match=r"example 1 lacks \['attention_mask'\], which example 0 has"
    ):
        ours.pad([{"input_ids": [1], "attention_mask": [1]}, {"input_ids": [2]}])
    with pytest.raises(
        ValueError, match="list of ids as each example's input_ids; example 0 has int"
    ):
        ours.pad([{"input_ids": 1}, {"input_ids": 2}])
    with pytest.raises(ValueError, match="'label' has 1, input_ids has 2"):
        ours.pad({"input_ids": [[1], [2, 3]], "label": [0]})
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right', got 'up'"):
        ours.pad([{"input_ids": [1]}], padding_side="up")
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int, got 0"):
        ours.pad([{"input_ids": [1]}], pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="return_tensors must be one of None, 'np', 'pt', 'tf'"):
        ours.pad([{"input_ids": [1]}], return_tensors="jax")
    with pytest.raises(ValueError, match=r"Cannot make 'pt' tensors of 'input_ids'.*from 1 to 2"):
        ours.pad([{"input_ids": [1]}, {"input_ids": [2, 3]}], padding=False, return_tensors="pt")
    # No model_max_length: transformers warns and does not pad; ours asks for max_length.
    files = (BUNDLED / "vocab.json", BUNDLED / "merges.txt")
    with pytest.raises(ValueError, match="needs a length: pass max_length"):
        cls(*files, pad_token=EOT).pad([{"input_ids": [1]}], padding="max_length")


def test_pad_takes_tuples(cls, padded):
    ours = padded[cls]
    assert ours.pad([{"input_ids": (1, 2, 3)}, {"input_ids": (4,)}], padding_side="left") == {
        "input_ids": [[1, 2, 3], [EOT_ID, EOT_ID, 4]],
        "attention_mask": [[1, 1, 1], [0, 0, 1]],
    }
    single = ours.pad({"input_ids": (1, 2, 3)}, pad_to_multiple_of=4, return_tensors="np")
    assert single["input_ids"].tolist() == [1, 2, 3, EOT_ID]


def test_pad_logs_ignored_max_length(cls, padded, caplog):
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        padded[cls].pad([{"input_ids": [1]}], max_length=4)
    assert "`max_length` is ignored when `padding`=`True`" in caplog.text


# ----- data collators and DataLoader -------------------------------------------------------


COLLATORS = {
    "with_padding": lambda tok, rt: DataCollatorWithPadding(tok, return_tensors=rt),
    "with_padding_max_length": lambda tok, rt: DataCollatorWithPadding(
        tok, padding="max_length", max_length=16, return_tensors=rt
    ),
    "with_padding_multiple": lambda tok, rt: DataCollatorWithPadding(
        tok, pad_to_multiple_of=8, return_tensors=rt
    ),
    "lm": lambda tok, rt: DataCollatorForLanguageModeling(tok, mlm=False, return_tensors=rt),
    "lm_multiple": lambda tok, rt: DataCollatorForLanguageModeling(
        tok, mlm=False, pad_to_multiple_of=8, return_tensors=rt
    ),
    "token_classification": lambda tok, rt: DataCollatorForTokenClassification(
        tok, return_tensors=rt
    ),
}


def collator_input(name, tok):
    """Tokenized examples as a datasets map gives them (with a "label" for classification)."""
    rows = [dict(tok(t)) for t in TEXTS]
    if name.startswith("with_padding"):
        return [{**r, "label": i % 2} for i, r in enumerate(rows)]
    if name == "token_classification":
        return [{**r, "labels": [i % 3 for i in range(len(r["input_ids"]))]} for r in rows]
    return rows


@pytest.mark.parametrize("return_tensors", ["pt", "np", "tf"])
@pytest.mark.parametrize("name", list(COLLATORS))
@pytest.mark.parametrize("tokenizer_side", ["right", "left"])
def test_collators_match_transformers(
    cls, refs, padded, side, name, return_tensors, tokenizer_side
):
    ours, theirs = padded[cls], refs[1]
    side(tokenizer_side, ours, theirs)
    make = COLLATORS[name]
    expected = make(theirs, return_tensors)(collator_input(name, theirs))
    got = make(ours, return_tensors)(collator_input(name, ours))
    assert_same(got, expected, name)
    if name.startswith("lm"):  # causal LM labels: the ids, with -100 at padding
        ids, labels = np.asarray(got["input_ids"]), np.asarray(got["labels"])
        assert (labels[np.asarray(got["attention_mask"]) == 0] == -100).all()
        assert (labels[ids != ours.pad_token_id] == ids[ids != ours.pad_token_id]).all()


@pytest.mark.parametrize("return_tensors", ["pt", "np", "tf"])
def test_lm_collator_on_lists_of_ids(cls, refs, padded, return_tensors):
    """Examples that are bare lists of ids go through transformers' own padding helpers."""
    ours, theirs = padded[cls], refs[1]
    collate = DataCollatorForLanguageModeling(ours, mlm=False, return_tensors=return_tensors)
    expected = DataCollatorForLanguageModeling(theirs, mlm=False, return_tensors=return_tensors)
    examples = [ours.encode(t) for t in TEXTS if t]
    got, want = collate(examples), expected([theirs.encode(t) for t in TEXTS if t])
    assert set(got) == set(want)
    for key in want:
        assert np.array_equal(np.asarray(got[key]), np.asarray(want[key]))


def test_collators_with_an_added_pad_token(cls):
    """``add_special_tokens({"pad_token": "[PAD]"})``: a new id, and only it becomes -100."""
    ours, theirs = cls.from_pretrained(BUNDLED), hf_tokenizers()[1]
    assert (
        ours.add_special_tokens({"pad_token": "[PAD]"})
        == theirs.add_special_tokens({"pad_token": "[PAD]"})
        == 1
    )
    assert len(ours) == len(theirs) == 50258
    assert ours.pad_token_id == theirs.pad_token_id == 50257
    texts = [f"Hi{EOT}", "Hello world, and more words"]
    for make in (COLLATORS["lm"], COLLATORS["with_padding_multiple"]):
        got = make(ours, "pt")([ours(t) for t in texts])
        assert_same(got, make(theirs, "pt")([theirs(t) for t in texts]))
    assert got["input_ids"][0].tolist() == [17250, 50256] + [50257] * 6


def test_dataloader_collate_fn(cls, refs, padded):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    ours, theirs = padded[cls], refs[1]
    texts = TEXTS * 3
    expected = list(
        DataLoader(
            [theirs(t) for t in texts],
            batch_size=4,
            collate_fn=lambda b: theirs.pad(b, return_tensors="pt"),
        )
    )
    for collate_fn in (lambda b: ours.pad(b, return_tensors="pt"), DataCollatorWithPadding(ours)):
        batches = list(DataLoader([ours(t) for t in texts], batch_size=4, collate_fn=collate_fn))
        assert len(batches) == len(expected) == 3
        for got, want in zip(batches, expected, strict=True):
            assert_same(got, want)
            assert got.input_ids is got["input_ids"] and got.input_ids.dtype == torch.int64
            assert got.to("cpu") is got and got.attention_mask.device.type == "cpu"


# ----- BatchEncoding ------------------------------------------------------------------------


def test_batch_encoding_attributes(cls, refs, padded):
    torch = pytest.importorskip("torch")
    ours, theirs = padded[cls], refs[1]
    enc = ours(TEXTS, padding=True, return_tensors="pt")
    ref = theirs(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(enc.input_ids, ref.input_ids)
    assert torch.equal(enc.attention_mask, ref.attention_mask)
    assert enc.to(torch.device("cpu"), non_blocking=True) is enc
    again = pickle.loads(pickle.dumps(ours(TEXTS[0])))  # DataLoader workers pickle batches
    assert type(again) is BatchEncoding and again.input_ids == ours.encode(TEXTS[0])
