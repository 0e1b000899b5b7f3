"""PyTorch-only parts of ``generate``: the compiled static-cache decode step, the model's own
``lm_head`` at every step, bf16 packed weights, the double-heads model, generators and devices.
The behaviour both frameworks share is in ``tests/test_generate.py``."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

from cases import tiny_config

torch = pytest.importorskip("torch")

import gpt2_dual.pt as gpt  # noqa: E402
import gpt2_dual.pt.generate as generation  # noqa: E402
from gpt2_dual.pt.linear import onednn_by_default  # noqa: E402
from gpt2_dual.pt.packing import bf16_packing_available  # noqa: E402

PROMPT = torch.tensor([[5, 17, 42, 8, 61, 23], [70, 3, 3, 19, 88, 41]])
GREEDY = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=0)


def _model(head: str = "lm", seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_config(initializer_range=0.3, eos_token_id=98, bos_token_id=98)
    return getattr(gpt, {"lm": "GPT2LMHeadModel", "dh": "GPT2DoubleHeadsModel"}[head])(
        config
    ).eval()


# torch's own compile stack still uses torch.jit.script_method (torch/utils/mkldnn.py).
NO_JIT_WARNING = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)


@NO_JIT_WARNING
def test_compiled_static_step_equals_eager_and_compiles_once(fresh_dynamo, monkeypatch):
    """The CUDA path (compiled decode step over a StaticCache) run on CPU with aot_eager."""
    model = _model()
    eager = model.generate(PROMPT, cache_implementation="static", **GREEDY)
    compiled = functools.partial(generation.compiled_step, backend="aot_eager")
    monkeypatch.setattr(generation, "_auto_compile", lambda config, model: True)
    monkeypatch.setattr(generation, "compiled_step", compiled)
    from torch._dynamo.utils import counters

    counters.clear()
    got = model.generate(PROMPT, cache_implementation="static", **GREEDY)
    assert torch.equal(got, eager)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch._dynamo.config.error_on_recompile = True  # the same shapes again: no new graph
    mask = torch.ones_like(PROMPT)
    mask[1, :2] = 0
    padded = model.generate(PROMPT, mask, cache_implementation="static", **GREEDY)
    assert torch.equal(padded[0], got[0])


def test_each_decode_step_runs_the_models_own_lm_head():
    """Hooks on ``lm_head`` see every step, and logits a hook changes are the ones decoded."""
    model = _model()
    plain = model.generate(PROMPT, **GREEDY)
    calls = []
    seen = model.lm_head.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    assert torch.equal(model.generate(PROMPT, **GREEDY), plain)
    assert len(calls) == GREEDY["max_new_tokens"]
    seen.remove()
    first = int(plain[0, PROMPT.shape[1]])

    def ban_first(module, args, out):
        out = out.clone()
        out[..., first] = float("-inf")
        return out

    model.lm_head.register_forward_hook(ban_first)
    assert not (model.generate(PROMPT, **GREEDY)[:, PROMPT.shape[1] :] == first).any()


def test_double_heads_model_generates_as_the_lm_head_model():
    lm, dh = _model("lm"), _model("dh")
    dh.transformer.load_state_dict(lm.transformer.state_dict())
    dh.tie_weights()
    assert torch.equal(
        dh.generate(PROMPT, num_beams=2, **GREEDY), lm.generate(PROMPT, num_beams=2, **GREEDY)
    )


def test_generator_and_seed_draw_the_same_tokens():
    model = _model()
    kwargs = dict(do_sample=True, top_k=0, **GREEDY)
    by_seed = model.generate(PROMPT, seed=7, **kwargs)
    by_generator = model.generate(PROMPT, generator=torch.Generator().manual_seed(7), **kwargs)
    assert torch.equal(by_seed, by_generator)


def test_tokenizer_output_unpacks_into_generate():
    from gpt2_dual import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")
    torch.manual_seed(0)
    model = gpt.GPT2LMHeadModel(tiny_config(vocab_size=50257, n_positions=32)).eval()
    inputs = tokenizer("Hello, I'm a language model", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, pad_token_id=tokenizer.eos_token_id)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4) and out.dtype == torch.long
    assert np.array_equal(out[0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])


@NO_JIT_WARNING
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_static_generate_replays_a_graph_and_equals_eager(fresh_dynamo):
    torch.backends.cuda.matmul.allow_tf32 = False
    model = _model().cuda()
    ids = PROMPT.cuda()
    eager = model.generate(ids, cache_implementation="static", disable_compile=True, **GREEDY)
    from torch._dynamo.utils import counters

    counters.clear()
    got = model.generate(ids, cache_implementation="static", **GREEDY)
    assert torch.equal(got, eager) and counters["stats"]["unique_graphs"] == 1


def test_model_card_calls_run_on_cpu(tmp_path):
    """transformers' model card, with gpt2_dual imports, on a local folder and device "cpu"."""
    from gpt2_dual import GPT2TokenizerFast, pipeline

    torch.manual_seed(0)
    gpt.GPT2LMHeadModel(tiny_config(vocab_size=50257, n_positions=64)).save_pretrained(tmp_path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(tmp_path)
    pipe = pipeline("text-generation", model=str(tmp_path), dtype=torch.float32, device="cpu")
    text = pipe("Hello, I'm a language model", max_new_tokens=5, do_sample=False)
    tokenizer = GPT2TokenizerFast.from_pretrained(tmp_path)
    model = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    inputs = tokenizer("Hello, I'm a language model", return_tensors="pt").to("cpu")
    output = model.generate(**inputs, max_new_tokens=5, cache_implementation="static")
    assert text == [{"generated_text": tokenizer.decode(output[0], skip_special_tokens=True)}]
    with pytest.raises(
        TypeError, match=r"^BatchEncoding.to moves torch tensors; 'input_ids' is a list"
    ):
        tokenizer("Hello").to("cpu")


def _count_packing(monkeypatch) -> list[int]:
    """Make ``generate`` record how many weights each call packs; returns the record."""
    packing, counts = generation.packed_weights, []

    @contextlib.contextmanager
    def counted(modules, rows=1, **options):
        with packing(modules, rows, **options) as count:
            counts.append(count)
            yield count

    monkeypatch.setattr(generation, "packed_weights", counted)
    return counts


def _no_packing(monkeypatch) -> None:
    monkeypatch.setattr(
        generation, "packed_weights", lambda modules, rows=1, **_: contextlib.nullcontext(0)
    )


def test_float32_generate_on_packed_weights_equals_plain(monkeypatch):
    """Packed where the CPU rule runs float32 on oneDNN (AMD x86), for batches (packed for 16
    rows) and for one row (packed for one, kept); elsewhere nothing is."""
    model = _model()
    prompts = torch.randint(
        0, model.config.vocab_size, (4, 5), generator=torch.Generator().manual_seed(1)
    )
    counts = _count_packing(monkeypatch)
    packed = model.generate(prompts, **GREEDY)  # 4 rows
    single = model.generate(prompts[:1], **GREEDY)  # 1 row
    products = 4 * model.config.n_layer + 1 if onednn_by_default() else 0
    assert counts == [products, products]
    _no_packing(monkeypatch)
    assert torch.equal(model.generate(prompts, **GREEDY), packed)
    assert torch.equal(model.generate(prompts[:1], **GREEDY), single)
    assert torch.equal(single, packed[:1])


@pytest.mark.skipif(not onednn_by_default(), reason="float32 runs on oneDNN only on AMD x86")
def test_kept_packs_are_reused_until_a_weight_changes(monkeypatch):
    """generate keeps the packed copies on the model: the next call reuses them; a weight
    changed in place is repacked (the tokens follow the new weights); moving the model drops
    them."""
    from gpt2_dual.pt.packing import _KEPT

    model = _model()
    first = model.generate(PROMPT, **GREEDY)
    kept = model.__dict__[_KEPT][1]
    assert len(kept) == 4 * model.config.n_layer + 1
    assert torch.equal(model.generate(PROMPT, **GREEDY), first)
    assert model.__dict__[_KEPT][1] is kept  # reused, not packed again
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(-3.0)
    changed = model.generate(PROMPT, **GREEDY)
    assert model.__dict__[_KEPT][1] is not kept
    assert not torch.equal(changed, first)
    reference = _model()
    with torch.no_grad():
        reference.transformer.h[0].mlp.c_fc.weight.mul_(-3.0)
    _no_packing(monkeypatch)
    assert torch.equal(reference.generate(PROMPT, **GREEDY), changed)  # plain weights
    model.to(torch.float32)
    assert _KEPT not in model.__dict__


@pytest.mark.skipif(
    not bf16_packing_available(), reason="no oneDNN bf16 weight packing on this CPU"
)
def test_bf16_generate_on_packed_weights_equals_plain(monkeypatch):
    model = _model().to(torch.bfloat16)
    counts = _count_packing(monkeypatch)
    packed = model.generate(PROMPT, num_beams=2, **GREEDY)
    packed_greedy = model.generate(PROMPT, **GREEDY)
    assert counts == [4 * model.config.n_layer + 1] * 2  # every block product and the LM head
    _no_packing(monkeypatch)
    assert torch.equal(model.generate(PROMPT, num_beams=2, **GREEDY), packed)
    assert torch.equal(model.generate(PROMPT, **GREEDY), packed_greedy)
