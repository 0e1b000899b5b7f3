"""The tokenizer API (padding, truncation, tensors, special tokens, decoding) against transformers."""

from __future__ import annotations

import importlib.util
import logging
import random

import numpy as np
import pytest

from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import BUNDLED, EOT, hf_tokenizers

BATCH = ["Hello world, this is a longer sentence.", "Hi", "Three short words", ""]
CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


@pytest.fixture(scope="module")
def refs_padded():
    """transformers' (slow, fast) tokenizers with pad_token = eos_token."""
    return hf_tokenizers(pad_token=EOT)


@pytest.fixture(scope="module")
def refs():
    """transformers' (slow, fast) tokenizers as loaded."""
    return hf_tokenizers()


@pytest.fixture(scope="module")
def shared():
    """One of each of ours per setting, for tests that do not change them."""
    return {(c, pad): load(c, pad_token=pad) for c in CLASSES for pad in (None, EOT)}


def load(cls, **kwargs):
    return cls.from_pretrained(BUNDLED, **kwargs)


def as_lists(enc) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in enc.items()}


CALL_OPTIONS = {
    "longest": dict(padding=True),
    "longest_multiple": dict(padding="longest", pad_to_multiple_of=8),
    "max_length": dict(padding="max_length", max_length=12),
    "max_length_multiple": dict(padding="max_length", max_length=10, pad_to_multiple_of=4),
    "left_pad_arg": dict(padding=True, padding_side="left"),
    "truncate": dict(truncation=True, max_length=4),
    "truncate_only_first": dict(truncation="only_first", max_length=3, padding=True),
    "truncate_implicit": dict(max_length=3),
    "pad_and_truncate": dict(padding="max_length", truncation=True, max_length=5),
    "no_mask": dict(padding=True, return_attention_mask=False),
    "length": dict(padding=True, return_length=True),
    "no_special": dict(add_special_tokens=False, padding=True),
}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("options", list(CALL_OPTIONS.values()), ids=list(CALL_OPTIONS))
def test_call_matches_transformers(cls, refs_padded, shared, options, side):
    """Batches and single texts: ids, attention masks, lengths (transformers' slow class)."""
    ref, tok = refs_padded[0], shared[cls, EOT]
    ref.padding_side = ref.truncation_side = tok.padding_side = tok.truncation_side = side
    try:
        assert tok(BATCH, **options) == ref(BATCH, **options).data
        assert tok(BATCH[0], **options) == ref(BATCH[0], **options).data
    finally:
        ref.padding_side = ref.truncation_side = tok.padding_side = tok.truncation_side = "right"


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_add_bos_token_matches_slow_transformers(cls, add_special_tokens):
    ref = hf_tokenizers(add_bos_token=True, pad_token=EOT)[0]
    tok = load(cls, add_bos_token=True, pad_token=EOT)
    options = dict(add_special_tokens=add_special_tokens, truncation=True, max_length=4)
    assert tok(BATCH, **options) == ref(BATCH, **options).data
    assert tok.encode("hi there") == ref.encode("hi there") == [50256, 5303, 612]


@pytest.mark.parametrize("tensor_type", ["np", "pt", "tf"])
def test_return_tensors_match_transformers(cls, refs_padded, shared, tensor_type):
    if tensor_type == "tf" and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    if tensor_type == "pt":
        pytest.importorskip("torch")
    ref, tok = refs_padded[0], shared[cls, EOT]
    for text in (BATCH, BATCH[0]):
        ours = tok(text, padding=True, return_tensors=tensor_type)
        theirs = ref(text, padding=True, return_tensors=tensor_type)
        assert set(ours) == set(theirs)
        for key in ours:
            assert type(ours[key]) is type(theirs[key])
            assert ours[key].dtype == theirs[key].dtype
            assert np.array_equal(np.asarray(ours[key]), np.asarray(theirs[key]))
    assert tok(BATCH[0], return_tensors="np")["input_ids"].shape == (1, len(tok.encode(BATCH[0])))


def test_batch_encoding_attribute_access(cls, shared):
    enc = shared[cls, None]("Hello world")
    assert isinstance(enc, BatchEncoding)
    assert enc.input_ids == enc["input_ids"] == [15496, 995]
    assert enc.attention_mask == [1, 1]
    with pytest.raises(AttributeError, match="BatchEncoding has no key 'offset_mapping'"):
        _ = enc.offset_mapping


@pytest.mark.parametrize(
    "options",
    [dict(), dict(padding=True), dict(truncation=True, max_length=3, padding="max_length")],
    ids=["plain", "padded", "truncated"],
)
@pytest.mark.parametrize("prefix", [False, True], ids=["no_prefix", "prefix_space"])
def test_offsets_match_transformers_fast(options, prefix):
    texts = ["Hello world!", "  spaced  out ", f"a{EOT}b 日本 😀", ""]
    ref = hf_tokenizers(pad_token=EOT, add_prefix_space=prefix)[1]
    tok = load(GPT2TokenizerFast, pad_token=EOT, add_prefix_space=prefix)
    theirs = ref(texts, return_offsets_mapping=True, **options).data
    assert tok(texts, return_offsets_mapping=True, **options) == theirs
    ours = tok(texts[0], return_offsets_mapping=True, return_tensors="np")["offset_mapping"]
    assert ours.shape == (1, len(tok.encode(texts[0])), 2)


def test_offsets_not_available_in_pure_tokenizer():
    with pytest.raises(NotImplementedError, match="return_offsets_mapping is not available"):
        load(GPT2Tokenizer)("Hello", return_offsets_mapping=True)


PREFIX_TEXTS = [
    "Hello world",
    "a <|endoftext|> b",
    "a<|endoftext|>b",
    "<|endoftext|>Hello",
    " x",
    "\tx",
    "",
    EOT,
    "x\n\ny",
]


def test_add_prefix_space_matches_transformers(cls):
    slow, fast = hf_tokenizers(add_prefix_space=True)
    tok = load(cls, add_prefix_space=True)
    for text in PREFIX_TEXTS:
        assert tok.encode(text) == fast.encode(text), text
    # transformers' slow tokenizer prefixes the whole text rather than each piece between
    # added tokens; both agree on texts that have no added token and no leading space.
    for text in ("Hello world", "\tx", "x\n\ny"):
        assert tok.encode(text) == slow.encode(text)
    tok.add_prefix_space = False
    assert tok.encode("Hello") == [15496]


def test_added_and_special_tokens_match_transformers(cls):
    tok = load(cls)
    refs = hf_tokenizers()
    assert tok.add_special_tokens({"pad_token": "<pad>"}) == 1
    for ref in refs:
        assert ref.add_special_tokens({"pad_token": "<pad>"}) == 1
    assert tok.add_tokens(["new tok", "<x>"]) == 2
    assert [r.add_tokens(["new tok", "<x>"]) for r in refs] == [2, 2]
    assert len(tok) == len(refs[0]) == len(refs[1]) == 50260
    assert tok.vocab_size == refs[0].vocab_size == 50257
    assert tok.pad_token == "<pad>" and tok.pad_token_id == refs[0].pad_token_id == 50257
    assert tok.all_special_tokens == refs[0].all_special_tokens == [EOT, "<pad>"]
    assert tok.all_special_ids == refs[0].all_special_ids
    assert tok.get_vocab() == refs[0].get_vocab()
    for text in ["a <pad> b", "a<pad>b<pad>", "xnew toky <x><x>", f"{EOT}<pad>new tok"]:
        ids = tok.encode(text)
        assert ids == refs[0].encode(text) == refs[1].encode(text)
        assert tok.convert_ids_to_tokens(ids) == refs[1].convert_ids_to_tokens(ids)
        # transformers' fast class joins added tokens without spaces, as here.
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == refs[1].decode(
                ids, skip_special_tokens=skip
            )
    # A token already in the vocabulary is matched whole but not counted, like transformers.
    assert tok.add_tokens("hello") == refs[0].add_tokens("hello") == 0
    refs[1].add_tokens("hello")
    assert tok.encode("sayhellothere") == refs[0].encode("sayhellothere")
    assert tok.encode("sayhellothere") == refs[1].encode("sayhellothere")


def test_additional_special_tokens_match_transformers(cls):
    tok = load(cls)
    refs = hf_tokenizers()
    new = {"additional_special_tokens": ["<a>", "<b>"]}
    assert tok.add_special_tokens(new) == 2
    assert [r.add_special_tokens(new) for r in refs] == [2, 2]
    assert tok.all_special_tokens == refs[0].all_special_tokens == [EOT, "<a>", "<b>"]
    assert tok.additional_special_tokens == ["<a>", "<b>"]
    ids = tok.encode("x<a>y <b>")
    assert ids == refs[0].encode("x<a>y <b>") == refs[1].encode("x<a>y <b>")
    assert tok.decode(ids, skip_special_tokens=True) == refs[1].decode(
        ids, skip_special_tokens=True
    )
    tok.add_special_tokens({"additional_special_tokens": ["<c>"]}, False)
    assert tok.additional_special_tokens == ["<a>", "<b>", "<c>"]


def test_lstrip_rstrip_added_tokens_agree(refs):
    """Added tokens that swallow the whitespace beside them: pure == fast == transformers."""
    decoder = {
        50257: {"content": "<m>", "lstrip": True, "special": True},
        50258: {"content": "[r]", "rstrip": True},
        50259: {"content": "<both>", "lstrip": True, "rstrip": True},
    }
    pure, fast = (load(c, added_tokens_decoder=decoder) for c in CLASSES)
    theirs = hf_tokenizers(added_tokens_decoder=decoder)[1]
    rng = random.Random(5)
    atoms = ["a", " ", "  ", "\n", "\t", "<m>", "[r]", "<both>", "x y"]
    for _ in range(300):
        text = "".join(rng.choices(atoms, k=rng.randint(0, 12)))
        assert pure.encode(text) == fast.encode(text) == theirs.encode(text), text


def test_non_ascii_added_token_round_trips(cls):
    """transformers' fast class decodes "é<x>" to "\ufffd<x>"; both ours keep the text."""
    tok = load(cls)
    tok.add_tokens(["é<x>", "ключ"])
    text = "aé<x>é ключи"
    ids = tok.encode(text)
    assert ids[:2] == [tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("é<x>")]
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_string(tok.convert_ids_to_tokens(ids)) == text


def test_special_token_properties(cls):
    tok = load(cls)
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == (EOT, EOT, EOT, None)
    assert tok.eos_token_id == tok.bos_token_id == 50256 and tok.pad_token_id is None
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == 50256 and len(tok) == 50257
    tok.pad_token_id = 13
    assert tok.pad_token == "."
    assert tok.special_tokens_map == {
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": ".",
    }
    with pytest.raises(ValueError, match="'foo_token' is not a special token attribute"):
        tok.add_special_tokens({"foo_token": "x"})


@pytest.mark.parametrize("clean", [None, False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_decode_options_match_transformers(cls, refs, shared, clean, skip):
    slow, fast = refs
    tok = shared[cls, None]
    text = f"Hello , world . I 'm here ! {EOT}Is n't it ? don 't"
    ids = tok.encode(text)
    options = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    expected = slow.decode(ids, **options)
    assert fast.decode(ids, **options) == expected
    assert tok.decode(ids, **options) == expected
    assert tok.batch_decode([ids, ids[:3]], **options) == slow.batch_decode(
        [ids, ids[:3]], **options
    )


def test_decode_accepts_arrays_and_tensors(cls, shared):
    tok = shared[cls, None]
    ids = [15496, 995]
    assert tok.decode(np.array(ids)) == "Hello world"
    assert tok.decode(np.int64(15496)) == "Hello"
    assert tok.decode(15496) == "Hello"
    assert tok.batch_decode(np.array([ids, ids])) == ["Hello world"] * 2
    torch = pytest.importorskip("torch")
    assert tok.decode(torch.tensor(ids)) == "Hello world"
    assert tok.batch_decode(torch.tensor([ids])) == ["Hello world"]


def test_conversions_match_transformers(cls, refs, shared):
    slow, fast = refs
    tok = shared[cls, None]
    ids = tok.encode("Hello wörld 😀 <|endoftext|>")
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == slow.convert_ids_to_tokens(ids) == fast.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(15496) == "Hello"
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == tokens[:-1]
    assert tok.convert_tokens_to_ids(tokens) == ids
    assert tok.convert_tokens_to_ids("Hello") == 15496
    assert tok.convert_tokens_to_ids("not-a-token") == slow.convert_tokens_to_ids("not-a-token")
    assert tok.convert_tokens_to_string(tokens) == slow.convert_tokens_to_string(tokens)
    assert tok.get_vocab() == slow.get_vocab()
    assert len(tok) == len(slow) == 50257


def test_model_max_length_warning(cls, refs, caplog):
    slow = refs[0]
    tok = load(cls)
    assert tok.model_max_length == slow.model_max_length == 1024
    text = "hello" + " hello" * 1099
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        assert len(tok.encode(text)) == 1100
        tok(text)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("gpt2_dual")]
    assert messages == [
        "Token indices sequence length is longer than the specified maximum sequence length "
        "for this model (1100 > 1024). Running this sequence through the model will result in "
        "indexing errors"
    ]
    truncated = tok(text, truncation=True)["input_ids"]
    assert truncated == slow(text, truncation=True)["input_ids"]
    assert len(truncated) == 1024


def test_implicit_truncation_warns(cls, refs, caplog):
    tok = load(cls)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        assert tok.encode("a b c d", max_length=2) == refs[0].encode("a b c d", max_length=2)
    assert "Truncation was not explicitly activated" in caplog.text


def test_padding_without_pad_token_raises(cls, shared):
    tok = shared[cls, None]
    with pytest.raises(
        ValueError,
        match=r"Asking to pad but the tokenizer does not have a padding "
        r"token.*tokenizer.pad_token = tokenizer.eos_token",
    ):
        tok(BATCH, padding=True)


def test_option_errors(cls, shared):
    tok = shared[cls, EOT]
    with pytest.raises(ValueError, match="return_tensors must be one of None, 'np', 'pt', 'tf'"):
        tok("Hello", return_tensors="jax")
    with pytest.raises(
        ValueError,
        match=r"Cannot make 'np' tensors of 'input_ids': the sequences "
        r"have different lengths \(from 0 to 9\)",
    ):
        tok(BATCH, return_tensors="np")
    with pytest.raises(ValueError, match="padding must be one of"):
        tok("Hello", padding="most")
    with pytest.raises(ValueError, match="truncation must be one of"):
        tok("Hello", truncation="first_longest", max_length=3)
    with pytest.raises(ValueError, match="truncation='only_second' cuts the second text of a pair"):
        tok("a b c d", truncation="only_second", max_length=3)
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right', got 'up'"):
        tok("Hello", padding=True, padding_side="up")
    with pytest.raises(
        ValueError,
        match=r"truncation length \(5\) is not a multiple of "
        r"pad_to_multiple_of \(4\)",
    ):
        tok(BATCH, padding=True, truncation=True, max_length=5, pad_to_multiple_of=4)
    with pytest.raises(ValueError, match="max_length must be a positive int, got 0"):
        tok("Hello", truncation=True, max_length=0)
    with pytest.raises(NotImplementedError, match="stride is not supported by the GPT-2"):
        tok("Hello", "world", stride=1)
    with pytest.raises(TypeError, match=r"list of \(text, text_pair\) pairs of str, got int"):
        tok(3)
    with pytest.raises(ValueError, match=r"token id 50257 is not in the vocabulary \(size 50257\)"):
        tok.decode([1, 50257])
    with pytest.raises(ValueError, match=r"token id -1 is not in the vocabulary"):
        tok.convert_ids_to_tokens([-1])
    with pytest.raises(ValueError, match="use batch_decode for a batch"):
        tok.decode([[1, 2]])


def test_no_model_max_length_needs_max_length(cls):
    from transformers import GPT2Tokenizer as HFSlow

    files = (BUNDLED / "vocab.json", BUNDLED / "merges.txt")
    tok = cls(*files, pad_token=EOT)
    ref = HFSlow(*files, pad_token=EOT)
    assert tok.model_max_length == ref.model_max_length == int(1e30)
    with pytest.raises(ValueError, match="needs a length: pass max_length"):
        tok("Hello", truncation=True)
    options = dict(padding="max_length", max_length=4)
    assert tok("a b c", **options) == ref("a b c", **options).data
