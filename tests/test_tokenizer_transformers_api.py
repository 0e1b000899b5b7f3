"""transformers API that transformers' own GPT-2 tokenizer tests call, against transformers 4.57
itself: the ``add_prefix_space`` keyword, text pairs (``encode(text, text_pair)``, ``text_pair``
in ``__call__``, batches of pairs, pair truncation, ``token_type_ids``, ``special_tokens_mask``),
unknown keywords and ``verbose``, ``do_lower_case``, and chat templates.

Where transformers' two classes disagree, both of ours follow one of them, and the test says
which and shows the disagreement."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import numpy as np
import pytest

from gpt2_dual.errors import InvalidInputError, MalformedFileError
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401
from tokenizer_refs import BUNDLED, EOT, hf_tokenizers, write_cut_vocabulary

CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


@pytest.fixture(scope="module")
def ours():
    """One of ours per class, with pad_token = eos_token (tests here do not change them)."""
    return {c: c.from_pretrained(BUNDLED, pad_token=EOT) for c in CLASSES}


@pytest.fixture(scope="module")
def refs():
    """transformers' (slow, fast) GPT-2 tokenizers with pad_token = eos_token."""
    return hf_tokenizers(pad_token=EOT)


@pytest.fixture(scope="module")
def loaded():
    """``loaded(cls_or_kind, **options)``: ``load`` or ``hf``, once per module, for tests that
    only read the tokenizer (a test that adds tokens, sets a template or checks what loading
    or a first call logs loads its own)."""
    cache = {}

    def get(kind, **kwargs):
        key = (kind, repr(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = hf(kind, **kwargs) if isinstance(kind, str) else load(kind, **kwargs)
        return cache[key]

    return get


#: Merges the small vocabulary keeps.
SMALL_MERGES = 40


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """GPT-2's files cut to its byte tokens, its first ``SMALL_MERGES`` merges and
    ``<|endoftext|>`` (``write_cut_vocabulary``), for options and files where the vocabulary's
    size plays no part."""
    return write_cut_vocabulary(tmp_path_factory.mktemp("small"), SMALL_MERGES, config=True)


def load(cls, folder=BUNDLED, **kwargs):
    return cls.from_pretrained(folder, **kwargs)


def hf(kind, folder=BUNDLED, **kwargs):
    """transformers' "slow" or "fast" GPT-2 tokenizer from the bundled folder (or ``folder``)."""
    from transformers import GPT2Tokenizer as HFSlow
    from transformers import GPT2TokenizerFast as HFFast

    return (HFFast if kind == "fast" else HFSlow).from_pretrained(folder, **kwargs)


@contextmanager
def hf_log():
    """The messages transformers logs meanwhile (its root logger does not propagate)."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


def raised(fn):
    """``(type, message)`` of what ``fn()`` raises."""
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def raised_or(fn):
    """``fn()``, or ``(ValueError, message)`` when it raises ValueError."""
    try:
        return fn()
    except ValueError as err:
        return ValueError, str(err)


def assert_raises_like(ours_fn, theirs_fn):
    """``ours_fn()`` raises what ``theirs_fn()`` raises (ours may raise a subclass from
    gpt2_dual.errors), with the same message."""
    (ours_type, ours_message), (their_type, their_message) = raised(ours_fn), raised(theirs_fn)
    assert issubclass(ours_type, their_type), (ours_type, their_type)
    assert ours_message == their_message


def same(got, want):
    """Same keys and values (tensors: same type, dtype and values)."""
    assert set(got) == set(want)
    for key, value in want.items():
        if hasattr(value, "dtype"):
            assert type(got[key]) is type(value) and got[key].dtype == value.dtype, key
            assert np.array_equal(np.asarray(got[key]), np.asarray(value)), key
        else:
            assert got[key] == value, key


# ----- add_prefix_space as a keyword -------------------------------------------------------

PREFIX_TEXTS = [
    "Hello world",
    "lower newer",
    "a <|endoftext|> b",
    "a<|endoftext|>b",
    "<|endoftext|>Hello",
    " x",
    "\tx",
    "",
    EOT,
    "x\n\ny",
]
#: Texts on which transformers' slow class (which prefixes the whole text) agrees: no added
#: token, no leading space, not empty.
WHOLE_TEXT_AGREES = ["Hello world", "lower newer", "\tx", "x\n\ny"]


def test_prefix_keyword_is_the_option_for_one_call(cls, ours, refs, loaded):
    """``add_prefix_space=True`` gives what transformers' fast class built with the option gives
    (only transformers' slow class takes the keyword; its fast one raises TypeError)."""
    tok = ours[cls]
    prefixed = loaded("fast", pad_token=EOT, add_prefix_space=True)
    for text in PREFIX_TEXTS:
        assert tok.tokenize(text, add_prefix_space=True) == prefixed.tokenize(text), text
        assert tok.encode(text, add_prefix_space=True) == prefixed.encode(text), text
        assert tok(text, add_prefix_space=True) == prefixed(text).data
        assert tok.encode_plus(text, add_prefix_space=True) == prefixed.encode_plus(text).data
    options = dict(padding=True, add_prefix_space=True)
    assert tok(PREFIX_TEXTS, **options) == prefixed(PREFIX_TEXTS, padding=True).data
    assert (
        tok.batch_encode_plus(PREFIX_TEXTS, **options) == prefixed(PREFIX_TEXTS, padding=True).data
    )
    assert not tok.add_prefix_space and tok.encode("Hello") == refs[1].encode("Hello")


def test_prefix_keyword_matches_transformers_slow(cls, ours, refs, loaded):
    """transformers' test_rust_and_python_full_tokenizers: the slow class's keyword."""
    tok, slow = ours[cls], refs[0]
    for text in WHOLE_TEXT_AGREES:
        assert tok.tokenize(text, add_prefix_space=True) == slow.tokenize(
            text, add_prefix_space=True
        )
        options = dict(add_special_tokens=False, add_prefix_space=True)
        assert tok.encode(text, **options) == slow.encode(text, **options)
    assert (
        tok("Hello world", "Hi there", add_prefix_space=True)
        == slow("Hello world", "Hi there", add_prefix_space=True).data
    )
    # Where the text starts with a space or holds an added token, ours follow the option
    # (transformers' fast class) and its slow class differs.
    prefixed = loaded("fast", add_prefix_space=True)
    for text in (" x", f"a{EOT}b"):
        theirs = slow.tokenize(text, add_prefix_space=True)
        assert tok.tokenize(text, add_prefix_space=True) == prefixed.tokenize(text) != theirs


def test_prefix_keyword_false_on_a_prefixed_tokenizer(cls, refs, loaded):
    tok = loaded(cls, add_prefix_space=True, pad_token=EOT)
    plain = refs[1]
    for text in PREFIX_TEXTS:
        assert tok.encode(text, add_prefix_space=False) == plain.encode(text), text
    assert tok.tokenize("Hello") == tok.tokenize(" Hello", add_prefix_space=False)  # still on


def test_prefix_keyword_offsets(ours, loaded):
    tok = ours[GPT2TokenizerFast]
    prefixed = loaded("fast", pad_token=EOT, add_prefix_space=True)
    options = dict(return_offsets_mapping=True, padding=True)
    expected = prefixed(PREFIX_TEXTS, **options).data
    assert tok(PREFIX_TEXTS, add_prefix_space=True, **options) == expected


def test_prefix_keyword_sees_tokens_added_later(cls, small):
    tok = load(cls, small)
    plain, prefixed = hf("fast", small), hf("fast", small, add_prefix_space=True)
    text = "x <new> y<new>"
    assert tok.encode(text, add_prefix_space=True) == prefixed.encode(text)
    assert tok.add_tokens(["<new>"]) == prefixed.add_tokens(["<new>"]) == plain.add_tokens("<new>")
    assert tok.encode(text, add_prefix_space=True) == prefixed.encode(text)
    tok.add_prefix_space = True
    assert tok.encode(text, add_prefix_space=False) == plain.encode(text)
    assert tok.encode(text) == prefixed.encode(text)


# ----- text pairs --------------------------------------------------------------------------

PAIRS = [
    ("Hello world, this is long", "Hi there"),
    ("Hi", "Hello world, this is long"),
    ("", "x y"),
    ("a b", ""),
    (f"x{EOT}y", "z"),
    ("  spaced ", "\tTabbed"),
]
FIRSTS, SECONDS = [a for a, _ in PAIRS], [b for _, b in PAIRS]
PAIR_OPTIONS = {
    "plain": dict(),
    "padded": dict(padding=True),
    "left": dict(padding="max_length", max_length=12, padding_side="left"),
    "multiple": dict(padding=True, pad_to_multiple_of=8),
    "columns": dict(
        padding=True,
        return_token_type_ids=True,
        return_special_tokens_mask=True,
        return_length=True,
    ),
    "no_special": dict(add_special_tokens=False, return_special_tokens_mask=True),
    "truncated": dict(truncation="only_first", max_length=8, padding=True),
}


@pytest.mark.parametrize("options", list(PAIR_OPTIONS.values()), ids=list(PAIR_OPTIONS))
def test_pairs_match_transformers(cls, ours, refs, options):
    """Every form of a pair transformers takes, against its slow class (its fast one gives the
    same ids; it counts ``length`` after padding)."""
    tok, slow = ours[cls], refs[0]
    for a, b in PAIRS:
        assert tok.encode(a, b) == tok.encode((a, b)) == slow.encode(a, b) == refs[1].encode(a, b)
        assert tok(a, b, **options) == slow(a, b, **options).data
        assert tok(a, text_pair=b, **options) == slow(a, text_pair=b, **options).data
        assert tok.encode_plus(a, b, **options) == slow.encode_plus(a, b, **options).data
        assert tok.encode_plus((a, b), **options) == slow(a, b, **options).data
    expected = slow(FIRSTS, SECONDS, **options).data
    assert tok(FIRSTS, SECONDS, **options) == expected
    assert tok(FIRSTS, text_pair=SECONDS, **options) == expected
    assert tok(PAIRS, **options) == slow(PAIRS, **options).data == expected
    assert tok([list(p) for p in PAIRS], **options) == expected
    assert tok.batch_encode_plus(PAIRS, **options) == slow.batch_encode_plus(PAIRS, **options).data


@pytest.mark.parametrize("tensor_type", ["np", "pt"])
def test_pair_tensors_match_transformers(cls, ours, refs, tensor_type):
    if tensor_type == "pt":
        pytest.importorskip("torch")
    tok, slow = ours[cls], refs[0]
    options = dict(padding=True, return_tensors=tensor_type, return_token_type_ids=True)
    same(tok(FIRSTS, SECONDS, **options), slow(FIRSTS, SECONDS, **options))
    same(tok(*PAIRS[0], **options), slow(*PAIRS[0], **options))
    got, want = (
        tok.encode(*PAIRS[0], return_tensors=tensor_type),
        slow.encode(*PAIRS[0], return_tensors=tensor_type),
    )
    assert type(got) is type(want) and np.array_equal(np.asarray(got), np.asarray(want))


def test_pairs_with_add_bos_token_match_transformers_slow(cls, loaded):
    """BOS before each text, as transformers' slow class (its fast class adds no BOS)."""
    tok = loaded(cls, add_bos_token=True, pad_token=EOT)
    slow = loaded("slow", add_bos_token=True, pad_token=EOT)
    options = dict(padding=True, return_special_tokens_mask=True, return_length=True)
    assert tok(FIRSTS, SECONDS, **options) == slow(FIRSTS, SECONDS, **options).data
    for a, b in PAIRS:
        assert tok.encode(a, b) == slow.encode(a, b)
        assert tok.encode(a, b, add_special_tokens=False) == slow.encode(
            a, b, add_special_tokens=False
        )
        # transformers' slow token_type_ids leave the BOS ids out (a list shorter than the
        # ids); ours give each BOS the type of its text.
        enc = tok(a, b, return_token_type_ids=True, return_special_tokens_mask=True)
        types, marks = enc["token_type_ids"], enc["special_tokens_mask"]
        assert len(types) == len(enc["input_ids"])
        assert [t for t, m in zip(types, marks, strict=True) if not m] == slow(
            a, b, return_token_type_ids=True
        )["token_type_ids"]
        assert [t for t, m in zip(types, marks, strict=True) if m] == [0, 1]


def test_special_tokens_mask_input_pairs_and_bos_token(cls):
    """transformers' GPT-2 test of that name (its get_tokenizer(do_lower_case=False, ...))."""
    tok = cls(
        BUNDLED / "vocab.json", BUNDLED / "merges.txt", do_lower_case=False, add_bos_token=True
    )
    first, second = "Encode this.", "This one too please."
    plain = tok.encode(first, add_special_tokens=False) + tok.encode(
        second, add_special_tokens=False
    )
    enc = tok(first, second, add_special_tokens=True, return_special_tokens_mask=True)
    mask = enc["special_tokens_mask"]
    assert len(mask) == len(enc["input_ids"])
    assert [x for x, m in zip(enc["input_ids"], mask, strict=True) if not m] == plain


def _ids_or_error(tok, a, b, **options):
    try:
        return tok(a, b, **options)["input_ids"]
    except Exception as err:  # transformers' fast class raises a bare Exception
        return type(err)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_pair_truncation_matches_transformers_fast(cls, ours, refs, strategy, side):
    """Every cut of up to 4 + 4 ids to 1..9: ids as transformers' fast class cuts them; where
    it refuses (a bare Exception), ours raise the error its slow class logs (before leaving
    the ids uncut)."""
    tok, (slow, fast) = ours[cls], refs
    tok.truncation_side = slow.truncation_side = fast.truncation_side = side
    refused = 0
    try:
        for la in range(5):
            for lb in range(1, 5):
                a, b = " a" * la, " b" * lb
                for length in range(1, 10):
                    options = dict(truncation=strategy, max_length=length)
                    expected = _ids_or_error(fast, a, b, **options)
                    if expected is not Exception:
                        assert tok(a, b, **options)["input_ids"] == expected, (la, lb, length)
                        continue
                    with hf_log() as logged:
                        slow(a, b, **options)
                    with pytest.raises(InvalidInputError) as info:
                        tok(a, b, **options)
                    assert [str(info.value)] == logged
                    refused += 1
    finally:
        tok.truncation_side = slow.truncation_side = fast.truncation_side = "right"
    assert (refused > 0) is (strategy != "longest_first")  # both paths were taken


def test_pair_truncation_odd_split_follows_transformers_fast(cls, ours, refs):
    """A cut that leaves an odd budget: transformers' fast class (``tokenizers``) gives the odd
    id to the longer text, its slow class to the first; ours follow the fast class."""
    tok, (slow, fast) = ours[cls], refs
    a, b, options = "a b c d", "e f g h i", dict(truncation=True, max_length=5)
    assert tok(a, b, **options)["input_ids"] == fast(a, b, **options)["input_ids"]
    assert tok(a, b, **options)["input_ids"] != slow(a, b, **options)["input_ids"]


def test_pair_truncation_with_bos_matches_transformers_slow(cls, loaded):
    """With ``add_bos_token`` (transformers' slow class only), wherever its two classes agree
    on the cut without BOS."""
    tok = loaded(cls, add_bos_token=True)
    slow = loaded("slow", add_bos_token=True)
    plain_slow, plain_fast = loaded("slow"), loaded("fast")
    compared = 0
    for la in range(5):
        for lb in range(5):
            a, b = " a" * la, " b" * lb
            for length in range(3, 12):
                cut = dict(truncation=True, max_length=length - 2)
                if _ids_or_error(plain_slow, a, b, **cut) != _ids_or_error(plain_fast, a, b, **cut):
                    continue
                options = dict(truncation=True, max_length=length)
                assert tok(a, b, **options) == slow(a, b, **options).data, (la, lb, length)
                compared += 1
    assert compared > 150  # of 225


def test_pair_offsets_match_transformers_fast(ours, refs):
    tok = ours[GPT2TokenizerFast]
    options = dict(return_offsets_mapping=True, padding="max_length", truncation=True, max_length=9)
    assert tok(FIRSTS, SECONDS, **options) == refs[1](FIRSTS, SECONDS, **options).data


def test_pair_input_errors_match_transformers(ours, refs):
    for tok in ours.values():
        for call in (
            lambda t: t(["a", "b"], ["c"]),  # ValueError: batch lengths differ
            lambda t: t(["a", "b"], "c"),  # TypeError: a str pair for a batch
        ):
            for theirs in refs:
                assert_raises_like(lambda t=tok, c=call: c(t), lambda t=theirs, c=call: c(t))
    # transformers' fast class raises TypeError here (its slow class reads lists as tokens);
    # ours raise TypeError too, with one message for both classes.
    for call in (
        lambda t: t("a", ["b"]),
        lambda t: t.encode("a", ["b"]),
        lambda t: t([("a", "b", "c")]),
    ):
        assert raised(lambda c=call: c(refs[1]))[0] is TypeError
        pure, fast = (raised(lambda c=call, t=t: c(t)) for t in ours.values())
        assert pure == fast and issubclass(pure[0], TypeError)


def test_implicit_truncation_warning_is_transformers(cls, caplog, small):
    tok, slow = load(cls, small), hf("slow", small)
    with hf_log() as logged:
        slow("a b c d", "e f", max_length=3)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ids = tok("a b c d", "e f", max_length=3)["input_ids"]
    assert ids == slow("a b c d", "e f", max_length=3, truncation=True)["input_ids"]
    ours_logged = [r.getMessage() for r in caplog.records if r.name.startswith("gpt2_dual")]
    assert ours_logged == logged[:1]  # transformers adds its "overflowing tokens" note


# ----- unknown keywords, verbose ------------------------------------------------------------

UNKNOWN_KEYWORD = {
    "call": lambda t: t("Hello", foo=1),
    "call_pair": lambda t: t("Hello", "there", foo=1),
    "encode": lambda t: t.encode("Hello", foo=1),
    "encode_plus": lambda t: t.encode_plus("Hello", foo=1),
    "batch_encode_plus": lambda t: t.batch_encode_plus(["Hello"], foo=1),
    "tokenize": lambda t: t.tokenize("Hello", foo=1),
    "truncate_typo": lambda t: t(["Hello", "Hi"], truncate=True),  # transformers' slow test
}


@pytest.mark.parametrize("call", list(UNKNOWN_KEYWORD.values()), ids=list(UNKNOWN_KEYWORD))
def test_unknown_keyword_raises_type_error(cls, ours, refs, call):
    """TypeError, as transformers' fast class raises (its slow class only logs "Keyword
    arguments {...} not recognized." and goes on without the option)."""
    assert raised(lambda: call(refs[1]))[0] is TypeError
    with pytest.raises(TypeError, match="unexpected keyword argument '(foo|truncate)'"):
        call(ours[cls])
    with hf_log() as logged:
        call(refs[0])
    assert logged and logged[0].startswith("Keyword arguments {") and "not recognized" in logged[0]


def test_verbose_false_is_quiet(cls, caplog, small):
    tok, slow = load(cls, small), hf("slow", small)
    long_text = "hello" + " hello" * 1100
    with hf_log() as logged, caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        for t in (tok, slow):
            t(long_text, verbose=False)
            t("a b c", "d e", max_length=3, verbose=False)
            t(long_text, "more", verbose=False)
    assert logged == [m for m in logged if "overflowing tokens" in m]
    assert not [r for r in caplog.records if r.name.startswith("gpt2_dual")]
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        tok(long_text, "more")
    assert "Token indices sequence length is longer" in caplog.text


# ----- do_lower_case ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [False, True])
def test_do_lower_case_is_kept_but_never_lowercases(cls, tmp_path, caplog, value, small):
    """transformers' GPT-2 tokenizers accept ``do_lower_case`` and save it, but never lowercase."""
    slow, fast = hf("slow", small, do_lower_case=value), hf("fast", small, do_lower_case=value)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        tok = load(cls, small, do_lower_case=value)
    assert ("do_lower_case=True has no effect" in caplog.text) is value
    text = f"Hello WORLD {EOT} ÉTÉ"
    assert tok.tokenize(text) == slow.tokenize(text) == fast.tokenize(text)
    assert tok.encode(text) == slow.encode(text) == fast.encode(text)
    tok.save_pretrained(tmp_path / "ours")
    fast.save_pretrained(tmp_path / "theirs")
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is theirs["do_lower_case"] is value
    again = cls.from_pretrained(tmp_path / "theirs")
    again.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text()) == config
    load(cls, small).save_pretrained(tmp_path / "default")
    default = json.loads((tmp_path / "default" / "tokenizer_config.json").read_text())
    assert "do_lower_case" not in default


# ----- chat templates -----------------------------------------------------------------------

TEMPLATE = "{% for message in messages %}{{ message.content }}{{ eos_token }}{% endfor %}"
TEMPLATES = {"default": TEMPLATE, "tool_use": "{{ tools }}", "terse": "{{ messages[0].content }}"}
CHAT = [{"role": "user", "content": "Hello"}]


def test_no_chat_template_raises_transformers_error(cls, ours, refs):
    tok = ours[cls]
    assert tok.chat_template is None and all(r.chat_template is None for r in refs)
    for call in (lambda t: t.apply_chat_template(CHAT), lambda t: t.get_chat_template()):
        for theirs in refs:
            assert raised(lambda c=call, t=theirs: c(t))[0] is ValueError
            assert_raises_like(lambda c=call: c(tok), lambda c=call, t=theirs: c(t))


CHAT_CHECKS = {
    "dict_without_tokenize": dict(return_dict=True, tokenize=False),
    "mask_without_dict": dict(return_assistant_tokens_mask=True),
    "continue_and_prompt": dict(continue_final_message=True, add_generation_prompt=True),
    "continue_and_mask": dict(
        continue_final_message=True, return_assistant_tokens_mask=True, return_dict=True
    ),
}


@pytest.mark.parametrize("options", list(CHAT_CHECKS.values()), ids=list(CHAT_CHECKS))
def test_apply_chat_template_checks_are_transformers(cls, options, small):
    tok = load(cls, small, chat_template=TEMPLATE)
    theirs = hf("fast", small, chat_template=TEMPLATE)
    assert raised(lambda: theirs.apply_chat_template(CHAT, **options))[0] is ValueError
    assert_raises_like(
        lambda: tok.apply_chat_template(CHAT, **options),
        lambda: theirs.apply_chat_template(CHAT, **options),
    )


def test_apply_chat_template_refuses_to_render(cls, small):
    """transformers renders with Jinja2; gpt2_dual does not depend on it and refuses."""
    tok = load(cls, small, chat_template=TEMPLATE)
    theirs = hf("fast", small, chat_template=TEMPLATE)
    assert theirs.apply_chat_template(CHAT) == theirs.encode(f"Hello{EOT}")
    for call in (
        lambda: tok.apply_chat_template(CHAT),
        lambda: tok.apply_chat_template(CHAT, tokenize=False),
        # passed, not set
        lambda: load(cls, small).apply_chat_template(CHAT, chat_template=TEMPLATE),
    ):
        with pytest.raises(NotImplementedError, match="rendering needs Jinja2"):
            call()


def test_get_chat_template_matches_transformers(cls, small):
    tok = load(cls, small)
    theirs = hf("fast", small)
    for template in (TEMPLATE, TEMPLATES, {"terse": "x", "tool_use": "y"}):
        tok.chat_template = theirs.chat_template = template
        for args in [(), ("terse",), ("{{ literal }}",), (None, [{"name": "f"}])]:
            assert raised_or(lambda a=args: tok.get_chat_template(*a)) == raised_or(
                lambda a=args: theirs.get_chat_template(*a)
            ), (template, args)


def test_chat_template_files_round_trip(cls, tmp_path, small):
    """Ours save templates where transformers 4.57 does and load what it saves."""
    from transformers import GPT2Tokenizer as HFSlow
    from transformers import GPT2TokenizerFast as HFFast

    for template in (TEMPLATE, TEMPLATES):
        folder = tmp_path / str(len(template))
        written = load(cls, small, chat_template=template).save_pretrained(folder / "ours")
        names = [p.split(f"{folder}/ours/")[1] for p in written]
        assert names[2:-3] == (
            ["chat_template.jinja"] if template is TEMPLATE else
            ["chat_template.jinja", "additional_chat_templates/tool_use.jinja",
             "additional_chat_templates/terse.jinja"]
        )  # fmt: skip
        assert "chat_template" not in json.loads(
            (folder / "ours" / "tokenizer_config.json").read_text()
        )
        theirs = hf("fast", small, chat_template=template)
        theirs.save_pretrained(folder / "theirs")
        for hf_cls in (HFSlow, HFFast):
            assert hf_cls.from_pretrained(folder / "ours").chat_template == template
        assert cls.from_pretrained(folder / "theirs").chat_template == template
        overridden = cls.from_pretrained(folder / "theirs", chat_template="{{ x }}")
        assert overridden.chat_template == "{{ x }}"


@pytest.mark.parametrize(
    "value",
    [TEMPLATE, [{"name": k, "template": v} for k, v in TEMPLATES.items()]],
    ids=["str", "list"],
)
def test_chat_template_in_tokenizer_config(cls, tmp_path, value, small):
    """The older form: the template(s) inside tokenizer_config.json; a .jinja file wins."""
    from transformers import GPT2TokenizerFast as HFFast

    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((small / name).read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": value}))
    assert (
        cls.from_pretrained(tmp_path).chat_template
        == HFFast.from_pretrained(tmp_path).chat_template
    )
    (tmp_path / "chat_template.jinja").write_text("{{ file }}")
    assert cls.from_pretrained(tmp_path).chat_template == "{{ file }}"
    assert HFFast.from_pretrained(tmp_path).chat_template == "{{ file }}"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(3, "'chat_template' must be str or list"), ([{"name": "x"}], "chat_template must be a str")],
)
def test_malformed_chat_template_is_named(cls, tmp_path, value, fragment, small):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((small / name).read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": value}))
    with pytest.raises(MalformedFileError, match=fragment) as info:
        cls.from_pretrained(tmp_path)
    assert str(tmp_path / "tokenizer_config.json") in str(info.value)


def test_chat_template_from_a_hub_repo_then_offline(cls, hub, monkeypatch, small):
    """``chat_template.jinja`` comes with a repo (a local Hub-compatible server); offline, a
    cache made before that file was looked for still loads, without the template."""
    files = {n: (small / n).read_bytes() for n in ("vocab.json", "merges.txt")}
    hub.add_repo("me/chat", {**files, "chat_template.jinja": TEMPLATE.encode()})
    hub.add_repo("me/plain", files)
    assert cls.from_pretrained("me/chat").chat_template == TEMPLATE
    assert cls.from_pretrained("me/plain").chat_template is None
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cls.from_pretrained("me/chat").chat_template == TEMPLATE
    records = list(hub.cache_dir.glob("models--me--plain/.no_exist/*/chat_template.jinja"))
    assert records  # the absent file was recorded; an older cache lacks that record
    for record in records:
        record.unlink()
    tok = cls.from_pretrained("me/plain")
    assert tok.chat_template is None and tok.encode("Hello") == hf("fast", small).encode("Hello")
