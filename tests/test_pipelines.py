"""``gpt2_dual.pipeline`` against transformers 4.57's own pipelines on the same checkpoints.

transformers builds each head's random model (a tiny GPT-2 over the real 50257-token vocabulary,
weights drawn wide enough that labels and spans are not near ties) and saves it with our bundled
tokenizer's files; both libraries' pipelines then read that folder. Labels, spans, words,
offsets and texts must be equal, scores within 1e-5. Each check runs on gpt2_dual.pt and
gpt2_dual.tf.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest

from cases import ATOL as TOLERANCE
from cases import assert_close
from frameworks import has
from gpt2_dual import GPT2Tokenizer, GPT2TokenizerFast, pipeline
from gpt2_dual.pipelines.base import encode_with_offsets, offsets_from_bytes, word_ids
from gpt2_dual.pipelines.qa import char_span, window_starts

transformers = pytest.importorskip("transformers")

ATOL = TOLERANCE["float32"]  # pipeline outputs are float32 scores and logits
FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.skipif(not has("torch"), reason="no torch")),
    pytest.param("tf", marks=pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")),
]
LABELS = {0: "O", 1: "B-THING", 2: "I-THING"}
TEXTS = ["Hello world, café <|endoftext|> naïve 東京 🙂", "The quick brown fox", "a  b\n\tc"]
CONTEXT = "The quick brown fox jumps over Llanfairpwllgwyngyll and antidisestablishmentarianism."
LONG_CONTEXT = " ".join(
    f"Item {i} is a {c} box." for i, c in enumerate(["reddish", "blueberry"] * 12)
)
HEADS = {
    "lm": "GPT2LMHeadModel",
    "seq": "GPT2ForSequenceClassification",
    "tok": "GPT2ForTokenClassification",
    "qa": "GPT2ForQuestionAnswering",
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Folder per head: a transformers random model and our tokenizer's files."""
    import torch

    tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")
    folders = {}
    for key, class_name in HEADS.items():
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            vocab_size=50257, n_embd=32, n_layer=2, n_head=4, n_positions=64,
            initializer_range=0.2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
            pad_token_id=50256 if key == "seq" else None,
        )  # fmt: skip
        folder = tmp_path_factory.mktemp(key)
        getattr(transformers, class_name)(config).eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[key] = str(folder)
    return folders


@pytest.fixture(scope="module")
def tokenizer_pair():
    """``tokenizer_pair(prefix_space)``: the bundled GPT-2 files as (fast, pure) tokenizers,
    loaded once per ``add_prefix_space`` (the tests only encode with them)."""
    pairs = {}

    def get(prefix_space: bool):
        if prefix_space not in pairs:
            pairs[prefix_space] = (
                GPT2TokenizerFast.from_pretrained("gpt2", add_prefix_space=prefix_space),
                GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=prefix_space),
            )
        return pairs[prefix_space]

    return get


_REFERENCES: dict[str, object] = {}


def reference(task, folder, *args, **kwargs):
    """transformers' pipeline of ``task`` on ``folder``, called with ``args``/``kwargs``
    (pipelines and results kept for the next framework's run of the same call)."""
    key = repr((task, folder, args, sorted(kwargs.items())))
    if key not in _REFERENCES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own deprecation and generation-flag warnings
            if (task, folder) not in _REFERENCES:
                _REFERENCES[task, folder] = transformers.pipeline(
                    task, model=folder, framework="pt", device="cpu"
                )
            _REFERENCES[key] = _REFERENCES[task, folder](*args, **kwargs)
    return copy.deepcopy(_REFERENCES[key])


def assert_same(ours, theirs, path="out"):
    """Same structure and values; floats within ATOL."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), (path, ours, theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (path, ours, theirs)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, str | bool | int) and not hasattr(theirs, "dtype"):
        assert ours == theirs, (path, ours, theirs)
    else:
        assert isinstance(ours, float), (path, type(ours))
        assert ours == pytest.approx(float(theirs), abs=ATOL), (path, ours, theirs)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_text_classification_matches_transformers(checkpoints, framework):
    folder = checkpoints["seq"]
    ours = pipeline("sentiment-analysis", model=folder, framework=framework)
    assert ours.task == "text-classification"
    assert_same(ours(TEXTS[0]), reference("text-classification", folder, TEXTS[0]))
    assert_same(ours(TEXTS, batch_size=2), reference("text-classification", folder, TEXTS))
    for options in ({"top_k": None}, {"top_k": 2}, {"function_to_apply": "sigmoid"}):
        for inputs in (TEXTS[1], TEXTS[:2]):
            expected = reference("text-classification", folder, inputs, **options)
            assert_same(ours(inputs, **options), expected)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_token_classification_matches_transformers(checkpoints, tokenizer_pair, framework):
    folder = checkpoints["tok"]
    ours = pipeline("ner", model=folder, framework=framework)
    expected = reference("token-classification", folder, TEXTS)
    assert sum(map(len, expected)) > 5  # some tokens are not "O" (and some are: ignored)
    assert_same(ours(TEXTS, batch_size=2), expected)
    assert_same(ours(TEXTS[0]), expected[0])
    everything = reference("token-classification", folder, TEXTS[0], ignore_labels=[])
    assert_same(ours(TEXTS[0], ignore_labels=[]), everything)
    tokens = tokenizer_pair(False)[0](TEXTS[0])["input_ids"]
    assert [e["index"] for e in everything] == list(range(len(tokens)))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_question_answering_matches_transformers(checkpoints, framework):
    folder = checkpoints["qa"]
    ours = pipeline("question-answering", model=folder, framework=framework)
    cases = [
        ({"question": "What jumps?", "context": CONTEXT}, {}),
        ({"question": "Where?", "context": CONTEXT}, {"top_k": 5}),
        ({"question": "What jumps?", "context": CONTEXT}, {"top_k": 3, "align_to_words": False}),
        ({"question": "Which box?", "context": CONTEXT}, {"handle_impossible_answer": True}),
        ({"question": ["Which box?", "Who?"], "context": LONG_CONTEXT},
         {"max_seq_len": 40, "doc_stride": 12, "top_k": 4, "max_answer_len": 5}),
    ]  # fmt: skip
    for inputs, options in cases:
        expected = reference("question-answering", folder, **inputs, **options)
        got = ours(**inputs, **options)
        assert_same(got, expected)
        for answer in got if isinstance(got, list) else [got]:
            for a in answer if isinstance(answer, list) else [answer]:
                context = inputs["context"]
                assert a["answer"] == context[a["start"] : a["end"]]
    windows = ours(question="Which box?", context=LONG_CONTEXT, max_seq_len=40, doc_stride=12)
    assert windows["start"] > 0  # an answer from a window past the first is possible
    single = ours({"question": "What jumps?", "context": CONTEXT})
    assert_same(single, reference("question-answering", folder, question="What jumps?",
                                  context=CONTEXT))  # fmt: skip


@pytest.mark.parametrize("align", [True, False])
def test_qa_windows_and_word_spans_match_transformers_tokenizer(checkpoints, tokenizer_pair, align):
    """Every context token of every overflowing window maps to the characters transformers'
    fast tokenizer gives (``word_to_chars`` of its word within the window, or its offsets)."""
    question, context = "Which box?", LONG_CONTEXT + " Llanfairpwllgwyngyll antidisestablishment"
    hf = transformers.GPT2TokenizerFast.from_pretrained(checkpoints["qa"])
    enc = hf(question, context, truncation="only_second", max_length=40, stride=12,
             return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
    ours = tokenizer_pair(False)[0]
    q_len = len(ours.encode(question))
    ids, offsets, _ = encode_with_offsets(ours, context, add_special_tokens=False)
    words = word_ids(context, offsets) if align else None
    starts = window_starts(len(ids), 40 - q_len, 12)
    assert len(starts) == len(enc["input_ids"]) > 3
    for n, lo in enumerate(starts):
        window = (lo, min(lo + 40 - q_len, len(ids)))
        span = enc[n]
        assert span.ids == ours.encode(question) + ids[window[0] : window[1]]
        for t in range(q_len, len(span.ids)):
            if align:
                word = span.token_to_word(t)
                expected = span.word_to_chars(word, sequence_index=1)
            else:
                expected = span.offsets[t]
            i = t - q_len + lo
            assert char_span(offsets, words, i, i, window) == tuple(expected), (n, t)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_text_generation_greedy_matches_transformers(checkpoints, framework):
    folder = checkpoints["lm"]
    ours = pipeline("text-generation", model=folder, framework=framework)
    prompts = ["Hello, I'm a language model,", "Hi", ""]
    options = {"max_new_tokens": 8, "do_sample": False}
    expected = reference("text-generation", folder, prompts, **options)
    assert_same(ours(prompts, batch_size=2, **options), expected)  # left-padded batches
    assert_same(ours(prompts[0], **options), expected[0])
    new_only = ours(prompts[0], return_full_text=False, **options)
    assert new_only[0]["generated_text"] == expected[0][0]["generated_text"][len(prompts[0]) :]
    beams = {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    assert_same(ours(prompts[:2], **beams), reference("text-generation", folder, prompts[:2],
                                                     **beams))  # fmt: skip
    ids = ours(prompts[1], return_tensors=True, **options)[0]["generated_token_ids"]
    assert ids[:1] == [17250] and len(ids) == 9  # "Hi" + 8 new tokens


def _transformers_pipeline(task, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own deprecation and generation-flag warnings
        return transformers.pipeline(task, device="cpu", **kwargs)


def test_text_generation_defaults_follow_transformers(checkpoints):
    """The decoding defaults and the prefix as transformers' pipeline sets them on the same
    checkpoint: its ``TextGenerationPipeline._default_generation_config`` under the model's
    own ``generation_config``, then the config's ``task_specific_params``."""
    pytest.importorskip("torch")
    from gpt2_dual.pt import GPT2LMHeadModel

    folder, task = checkpoints["lm"], {"text-generation": {"max_length": 30, "prefix": "A"}}

    def models():
        ours = GPT2LMHeadModel.from_pretrained(folder)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(folder)
        for model in (ours, theirs):
            model.config.task_specific_params = copy.deepcopy(task)
        return ours, theirs

    ours_model, theirs_model = models()
    pipe = pipeline("text-generation", model=ours_model, tokenizer=folder)
    theirs = _transformers_pipeline("text-generation", model=theirs_model, tokenizer=folder)
    defaults = transformers.TextGenerationPipeline._default_generation_config.to_diff_dict()
    defaults.pop("transformers_version", None)
    fields = sorted({*defaults, "max_length", "bos_token_id", "eos_token_id", "pad_token_id"})
    expected = {f: getattr(theirs.generation_config, f) for f in fields}
    assert {f: getattr(pipe.generation_config, f) for f in fields} == expected
    assert pipe.prefix == theirs.prefix == "A"
    # the case covers both sources: the pipeline's defaults (the model's generation_config
    # sets none of them) and the task's max_length
    assert {f: expected[f] for f in defaults} == defaults and expected["max_length"] == 30

    ours_model, theirs_model = models()
    pipe = pipeline("text-generation", model=ours_model, tokenizer=folder, max_new_tokens=4)
    theirs = _transformers_pipeline("text-generation", model=theirs_model, tokenizer=folder,
                                    max_new_tokens=4)  # fmt: skip
    first = pipe("Hello", seed=1)
    assert first == pipe("Hello", seed=1) and first[0]["generated_text"].startswith("Hello")
    greedy = pipe("Hello", do_sample=False)
    assert_same(greedy, theirs("Hello", do_sample=False))
    plain = pipeline("text-generation", model=folder)("A" + "Hello", do_sample=False,
                                                      max_new_tokens=4)  # fmt: skip
    # the prefix conditions, then is dropped
    assert "A" + greedy[0]["generated_text"] == plain[0]["generated_text"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_model_and_tokenizer_objects(checkpoints, framework):
    module = pytest.importorskip(f"gpt2_dual.{framework}")
    folder = checkpoints["tok"]
    model = module.GPT2ForTokenClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match="pass tokenizer="):
        pipeline("ner", model=model)
    pure = GPT2Tokenizer.from_pretrained(folder)  # no offsets of its own: from token bytes
    by_object = pipeline("ner", model=model, tokenizer=pure, device="cpu")
    assert by_object.framework == framework
    assert_same(by_object(TEXTS), pipeline("ner", model=folder, framework=framework)(TEXTS))
    with pytest.raises(ValueError, match="needs a GPT2ForQuestionAnswering"):
        pipeline("question-answering", model=model, tokenizer=pure)
    with pytest.raises(ValueError, match="device"):
        pipeline("ner", model=model, tokenizer=pure, device="tpu:3")


def test_pt_dtype_and_device(checkpoints):
    torch = pytest.importorskip("torch")
    folder = checkpoints["seq"]
    pipe = pipeline("text-classification", model=folder, framework="pt", dtype="bfloat16",
                    device=-1)  # fmt: skip
    assert pipe.model.dtype == torch.bfloat16 and pipe.model.device.type == "cpu"
    full = pipeline("text-classification", model=folder, framework="pt")(TEXTS[1], top_k=None)
    half = pipe(TEXTS[1], top_k=None)
    assert_close([r["score"] for r in half], [r["score"] for r in full], "bfloat16")
    with pytest.raises(ValueError, match="floating torch dtype"):
        pipeline("text-classification", model=folder, framework="pt", dtype="int8")


@pytest.mark.gpu
def test_pt_cuda_matches_cpu(checkpoints):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for task, key, text in (("text-classification", "seq", TEXTS[1]), ("ner", "tok", TEXTS[0])):
        gpu = pipeline(task, model=checkpoints[key], framework="pt", device=0)
        assert gpu.model.device.type == "cuda"
        cpu = pipeline(task, model=checkpoints[key], framework="pt", device="cpu")
        assert [r["score"] for r in gpu(text)] == pytest.approx(
            [r["score"] for r in cpu(text)], abs=1e-4
        )
    options = {"max_new_tokens": 8, "do_sample": False}
    gen = pipeline("text-generation", model=checkpoints["lm"], framework="pt", device="cuda:0")
    cpu_gen = pipeline("text-generation", model=checkpoints["lm"], framework="pt")
    assert gen(TEXTS[1], **options) == cpu_gen(TEXTS[1], **options)


def test_tf_dtype(checkpoints):
    tf_module = pytest.importorskip("gpt2_dual.tf")
    folder = checkpoints["seq"]
    pipe = pipeline("text-classification", model=folder, framework="tf", dtype="mixed_bfloat16")
    assert pipe.model.dtype_policy.name == "mixed_bfloat16"
    assert 0.0 < pipe(TEXTS[1])[0]["score"] < 1.0
    with pytest.raises(ValueError, match="floating Keras dtype policy"):
        pipeline("text-classification", model=folder, framework="tf", dtype="int8")
    model = tf_module.GPT2ForSequenceClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match="cannot change a built Keras model"):
        pipeline("text-classification", model=model, tokenizer=folder, dtype="bfloat16")


def test_pipeline_errors(checkpoints):
    pytest.importorskip("torch")
    with pytest.raises(KeyError, match="available tasks: .*question-answering.*text-generation"):
        pipeline("summarization", model=checkpoints["lm"])
    with pytest.raises(ValueError, match="needs model="):
        pipeline("text-generation")
    with pytest.raises(ValueError, match="framework must be"):
        pipeline("text-generation", model=checkpoints["lm"], framework="jax")
    with pytest.raises(TypeError, match="gpt2_dual.pt or gpt2_dual.tf model"):
        pipeline("text-generation", model=object(), tokenizer=checkpoints["lm"])
    clf = pipeline("text-classification", model=checkpoints["seq"])
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['temperature'\]"):
        clf("hi", temperature=1.0)
    with pytest.raises(NotImplementedError, match="text pairs"):
        clf({"text": "a", "text_pair": "b"})
    clf.model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id"):
        clf(TEXTS, batch_size=2)
    gen = pipeline("text-generation", model=checkpoints["lm"])
    with pytest.raises(ValueError, match="n_positions"):
        gen("Hello", max_new_tokens=100)
    qa = pipeline("question-answering", model=checkpoints["qa"])
    with pytest.raises(ValueError, match="n_positions"):
        qa(question="q", context=CONTEXT, max_seq_len=384)
    with pytest.raises(ValueError, match="non-empty"):
        qa(question="", context=CONTEXT)
    with pytest.raises(NotImplementedError, match="aggregation_strategy"):
        pipeline("ner", model=checkpoints["tok"])("hi", aggregation_strategy="simple")


@pytest.mark.parametrize(
    "text",
    ["Hello world", " leading space", "café naïve 東京 🙂x", "a  b\n\n\tc  ", "x<|endoftext|>y"],
)
@pytest.mark.parametrize("prefix_space", [False, True])
def test_offsets_from_bytes_equal_the_fast_tokenizers(tokenizer_pair, text, prefix_space):
    fast, pure = tokenizer_pair(prefix_space)
    enc = fast(text, return_offsets_mapping=True)
    assert offsets_from_bytes(pure, text, enc["input_ids"]) == enc["offset_mapping"]
    with pytest.raises(ValueError, match="does not match the text"):
        offsets_from_bytes(pure, text + "!", fast("?" + text)["input_ids"])


def test_pipeline_import_is_lazy():
    code = (
        "import sys, gpt2_dual; from gpt2_dual import pipeline; "
        "import gpt2_dual.pipelines.generation, gpt2_dual.pipelines.classification, "
        "gpt2_dual.pipelines.qa; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
