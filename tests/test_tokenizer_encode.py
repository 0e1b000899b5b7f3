"""``encode``'s keywords, ``encode_plus``/``batch_encode_plus``, ``get_special_tokens_mask``,
the attributes collators read, and adding tokens, against transformers 4.57 itself."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AddedToken
from transformers import GPT2Tokenizer as HFSlow

from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import BUNDLED, EOT, hf_tokenizers

CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]
TEXTS = ["Hello world, this is a longer sentence.", "Hi", "", "Three short words"]
PAD_NOT_SET = "Asking to pad but the tokenizer does not have a padding token"


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


@pytest.fixture(scope="module")
def refs():
    """transformers' (slow, fast) GPT-2 tokenizers with pad_token = eos_token."""
    return hf_tokenizers(pad_token=EOT)


@pytest.fixture(scope="module")
def padded():
    """One of ours per class, with pad_token = eos_token."""
    return {c: c.from_pretrained(BUNDLED, pad_token=EOT) for c in CLASSES}


def assert_same(ours, theirs):
    """Same keys and values; arrays of the same type, dtype and shape."""
    assert set(ours) == set(theirs)
    for key in theirs:
        a, b = ours[key], theirs[key]
        assert type(a) is type(b), key
        if hasattr(b, "dtype"):
            assert a.dtype == b.dtype and a.shape == b.shape, key
            assert np.array_equal(a, b), key
        else:
            assert a == b, key


# ----- encode, encode_plus, batch_encode_plus -----------------------------------------------


ENCODE_OPTIONS = {
    "plain": dict(),
    "no_special": dict(add_special_tokens=False),
    "truncate": dict(truncation=True, max_length=3),
    "implicit_truncate": dict(max_length=3),
    "pad_max_length": dict(padding="max_length", max_length=12),
    "pad_left": dict(padding="max_length", max_length=12, padding_side="left"),
    "pad_multiple": dict(padding=True, pad_to_multiple_of=8),
    "pad_and_truncate": dict(padding="max_length", truncation=True, max_length=4),
    "np": dict(return_tensors="np"),
    "pt": dict(return_tensors="pt"),
    "tf": dict(return_tensors="tf"),
    "pt_padded": dict(return_tensors="pt", padding="max_length", max_length=12),
    "other_call_keywords": dict(return_attention_mask=False, return_length=True),
}


@pytest.mark.parametrize("options", list(ENCODE_OPTIONS.values()), ids=list(ENCODE_OPTIONS))
def test_encode_keywords_match_transformers(cls, refs, padded, options):
    ours, (slow, fast) = padded[cls], refs
    for text in TEXTS[:2]:
        expected = slow.encode(text, **options)
        got = ours.encode(text, **options)
        if options.get("return_tensors"):
            assert type(got) is type(expected) and got.dtype == expected.dtype
            assert np.asarray(got).shape == np.asarray(expected).shape == (1, len(expected[0]))
            got, expected = np.asarray(got).tolist(), np.asarray(expected).tolist()
        else:
            assert fast.encode(text, **options) == expected
        assert got == expected


def test_encode_errors(cls, padded):
    ours = padded[cls]
    for tok in (cls.from_pretrained(BUNDLED), HFSlow.from_pretrained(BUNDLED)):  # no pad token
        with pytest.raises(ValueError, match=PAD_NOT_SET):
            tok.encode("Hello", padding="max_length", max_length=4)
    with pytest.raises(TypeError, match="encode takes one str, got list"):
        ours.encode(["Hello", "world"])
    with pytest.raises(NotImplementedError, match="stride is not supported by the GPT-2"):
        ours.encode("Hello", stride=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'is_split_into_words'"):
        ours.encode("Hello", is_split_into_words=True)


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(padding=True, truncation=True, max_length=5),
        dict(padding=True, return_tensors="np"),
    ],
    ids=["plain", "pad_truncate", "np"],
)
def test_encode_plus_and_batch_encode_plus(cls, refs, padded, options):
    ours, (slow, _) = padded[cls], refs
    assert_same(ours.encode_plus(TEXTS[0], **options), slow.encode_plus(TEXTS[0], **options))
    assert_same(ours.batch_encode_plus(TEXTS, **options), slow.batch_encode_plus(TEXTS, **options))
    assert_same(ours.batch_encode_plus(tuple(TEXTS), **options), ours(TEXTS, **options))
    with pytest.raises(TypeError, match="encode_plus takes one str, got list; for a batch use"):
        ours.encode_plus(["Hello", "world"])
    with pytest.raises(TypeError, match="batch_encode_plus takes a list of str, got str"):
        ours.batch_encode_plus("Hello")


# ----- special tokens mask, added tokens, attributes ----------------------------------------


@pytest.mark.parametrize("add_bos_token", [False, True])
def test_get_special_tokens_mask_matches_transformers(cls, add_bos_token):
    ours = cls.from_pretrained(BUNDLED, add_bos_token=add_bos_token, pad_token="<pad>")
    slow = HFSlow.from_pretrained(BUNDLED, add_bos_token=add_bos_token, pad_token="<pad>")
    ids = ours.encode(f"Hi{EOT} there<pad>")
    assert ids == slow.encode(f"Hi{EOT} there<pad>")
    for args, kwargs in [
        ((ids,), dict(already_has_special_tokens=True)),
        ((ids,), {}),
        ((ids, ids[:2]), {}),
    ]:
        assert ours.get_special_tokens_mask(*args, **kwargs) == slow.get_special_tokens_mask(
            *args, **kwargs
        )
    with pytest.raises(ValueError, match="should not supply a second sequence"):
        ours.get_special_tokens_mask(ids, ids, already_has_special_tokens=True)


def test_attributes_collators_read(cls, refs, padded):
    ours, (slow, fast) = padded[cls], refs
    assert list(ours.model_input_names) == slow.model_input_names == fast.model_input_names
    assert ours.is_fast is (cls is GPT2TokenizerFast)
    assert len(ours) == len(fast) == 50257
    assert ours.pad_token_id == fast.pad_token_id and ours.padding_side == fast.padding_side
    assert ours.convert_tokens_to_ids(["Hello", "nope-not-a-token"]) == fast.convert_tokens_to_ids(
        ["Hello", "nope-not-a-token"]
    )


def test_adding_tokens_matches_transformers(cls):
    ours, refs_ = cls.from_pretrained(BUNDLED), hf_tokenizers()
    steps = [
        ("add_special_tokens", ({"pad_token": "[PAD]"},), {}),
        ("add_special_tokens", ({"additional_special_tokens": ["<|user|>", "<|bot|>"]},), {}),
        ("add_tokens", (["hello", "newword1", "newword1"],), {}),
        ("add_tokens", ("<s>",), dict(special_tokens=True)),
        ("add_tokens", (AddedToken("<m>", lstrip=True),), {}),
        ("add_tokens", ([AddedToken("[r]", rstrip=True, special=True)],), {}),
        ("add_special_tokens", ({"sep_token": AddedToken("<sep>")},), {}),
        ("add_special_tokens", ({"pad_token": "[PAD]"},), {}),  # already there: 0
    ]
    for method, args, kwargs in steps:
        counts = [getattr(t, method)(*args, **kwargs) for t in (ours, *refs_)]
        # transformers' fast class counts "newword1" twice here; its slow class and ours once.
        assert counts[0] == counts[1], (method, args, counts)
        assert len(ours) == len(refs_[0]) == len(refs_[1])
    assert len(ours) == 50257 + 8
    # transformers' slow class also lists add_tokens(special_tokens=True) tokens here; its
    # fast class and ours list the special tokens set by name or by add_special_tokens.
    assert ours.all_special_tokens == refs_[1].all_special_tokens
    assert ours.get_vocab() == refs_[1].get_vocab()
    for text in ["a <m>b [r] c<|user|>hi<|bot|>", "x<s>y [PAD]newword1 hello<sep>", f"{EOT}[r]  z"]:
        ids = ours.encode(text)
        assert ids == refs_[1].encode(text), text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == refs_[1].decode(
                ids, skip_special_tokens=skip
            )
