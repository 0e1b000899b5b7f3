"""int8 weight-only quantization through torchao (gpt2_dual.pt.torchao_int8) against a numpy
per-channel int8 reference, the fp32 model, greedy decoding by hand and the slot decoder.

Two paths compute a product (``int8_path``): PyTorch's int8 kernel, which takes the rows as
bfloat16 and rounds its sums to bfloat16 (``y = bf16(bf16(x) @ q.T) * scale + bias``; fewer
than ``SPLIT_ROWS`` rows go in as two bf16 parts, exact together), and the dequantized float
product. Each is checked against numpy: the dequantized one to float32, the kernel to the bound
its bf16 roundings allow, derived in ``_kernel_bound``. Tests of the
kernel path force it on (``use_int8pack(True)``): every PyTorch build has the kernel, vectorized
or not, with the same roundings.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from cases import assert_close

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from gpt2_dual.config import GPT2Config  # noqa: E402
from gpt2_dual.cpu import CpuInfo  # noqa: E402
from gpt2_dual.errors import InvalidInputError, QuantizedModelError  # noqa: E402
from gpt2_dual.pt import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.pt.slots import SlotDecoder  # noqa: E402
from gpt2_dual.pt.torchao_int8 import (  # noqa: E402
    DEQUANTIZE_ROWS,
    SPLIT_ROWS,
    Int8Linear,
    int8_path,
    int8_weight,
    quantize,
    use_int8pack,
)
from gpt2_dual.quantization import TorchAoConfig  # noqa: E402

logging.getLogger("torchao").setLevel(logging.ERROR)

BLOCK = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(autouse=True)
def _rule_restored():
    yield
    use_int8pack(None)


def _tiny(seed: int = 0, scale: float = 0.3) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        **dict(vocab_size=97, n_positions=64, n_embd=48, n_head=4, n_layer=3),
        **dict(initializer_range=scale, bos_token_id=96, eos_token_id=96),
    )
    return GPT2LMHeadModel(config).eval()


def _int8_ref(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (rows of ``(N, K)``): ``scale = max|w| / 127`` (float32), ``q =
    round(w / scale)``; returns ``(q, scale (N, 1))``."""
    w = w.astype(np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(127)
    scale = np.where(scale > 0, scale, np.float32(1))
    q = w.astype(np.float64)
    q /= scale  # in place: gpt2's head is 39M values
    return np.clip(np.rint(q, out=q), -127, 127, out=q), scale


def _dequantized(w: np.ndarray) -> np.ndarray:
    q, scale = _int8_ref(w)
    return q.astype(np.float32) * scale  # |q| <= 127: the exact product, rounded once


def _reference_model(model: GPT2LMHeadModel, head: bool) -> GPT2LMHeadModel:
    """A float copy whose product weights are the numpy-dequantized int8 ones."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for block in ref.transformer.h:
            for name in BLOCK:
                layer = block.get_submodule(name)  # Conv1D (K, N): quantize its (N, K)
                layer.weight.copy_(torch.from_numpy(_dequantized(layer.weight.numpy().T).T))
        if head:
            ref.config.tie_word_embeddings = False
            deq = _dequantized(ref.lm_head.weight.numpy())
            ref.lm_head.weight = torch.nn.Parameter(torch.from_numpy(deq))
    return ref


def _ids(vocab: int, n: int, seed: int = 1, rows: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, (rows, n)))


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, round to nearest even (as ``Tensor.to(bfloat16)``)."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def _kernel_bound(xb: np.ndarray, q: np.ndarray, scale: np.ndarray, ref: np.ndarray):
    """How far the kernel's ``bf16(sum) * scale + b`` may be from the exact ``ref``: the sum
    ``a = xb @ q.T`` rounded to bfloat16 (8 significant bits: at most ``2^-8 |a|``) after a
    float32 accumulation (at most ``K * 2^-24 * sum|xb q|``, twice: it can move the rounding),
    then float32 scaling and bias (a few ``2^-24 |ref|``)."""
    a = xb @ q.T
    sums = np.abs(xb) @ np.abs(q).T
    return (2**-8 * np.abs(a) + 2 * q.shape[1] * 2**-24 * sums) * scale.T + 2**-21 * np.abs(ref)


@pytest.mark.parametrize("head", [True, False])
def test_every_product_quantized(head):
    model = quantize(_tiny(), TorchAoConfig(include_input_output_embeddings=head))
    names = {n for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    blocks = {f"transformer.h.{i}.{b}" for i in range(3) for b in BLOCK}
    assert names == blocks | ({"lm_head"} if head else set())
    for name in names:
        layer = model.get_submodule(name)
        assert layer.weight.dtype == torch.int8 and not layer.weight.requires_grad
        assert layer.weight_scale.dtype == torch.float32
        assert layer.weight_scale.shape == (layer.out_features,)
    assert model.transformer.wte.weight.dtype == torch.float32  # lookups stay float
    assert model.is_quantized and model.quantization_method == "torchao"
    assert model.config.quantization_config == TorchAoConfig(include_input_output_embeddings=head)
    assert (model.lm_head.weight is model.transformer.wte.weight) is (not head)


def test_int8_weights_equal_numpy_per_channel():
    model = _tiny()
    w = model.transformer.h[1].mlp.c_fc.weight.detach().t()  # (N, K)
    w[3] = 0  # an all-zero row stays zero
    q, scale = int8_weight(w)
    want_q, want_scale = _int8_ref(w.numpy())
    np.testing.assert_array_equal(q.numpy(), want_q)  # no w / scale on a .5 tie here
    nonzero = np.arange(len(scale)) != 3
    np.testing.assert_array_equal(scale.numpy()[nonzero], want_scale[nonzero, 0])
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127 and not q[3].any()


def test_kernel_product_within_two_bf16_roundings_of_numpy():
    torch.manual_seed(3)
    w, b, x = torch.randn(40, 64) * 0.2, torch.randn(40), torch.randn(2, 5, 64)
    layer = Int8Linear.from_float(w, b)
    use_int8pack(True)
    with torch.no_grad():
        got = layer(x).reshape(-1, 40).numpy()
        use_int8pack(False)
        dequantized = layer(x).reshape(-1, 40).numpy()
    q, scale = _int8_ref(w.numpy())
    xb = _bf16(x.reshape(-1, 64).numpy()).astype(np.float64)
    want = (xb @ q.T) * scale.T + b.numpy()
    bound = _kernel_bound(xb, q, scale, want)
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    exact = x.reshape(-1, 64).numpy().astype(np.float64) @ (q * scale).T + b.numpy()
    assert_close(dequantized, exact)  # the other path: float32 products
    assert not np.array_equal(got, dequantized)  # the kernel did run


def _split_bound(x: np.ndarray, q: np.ndarray, scale: np.ndarray, ref: np.ndarray):
    """The bound for rows sent as ``hi = bf16(x)`` and ``lo = bf16(x - hi)``: each part's
    ``_kernel_bound`` (their sums are rounded apart), plus what ``lo`` leaves of ``x``."""
    hi = _bf16(x).astype(np.float64)
    lo = _bf16((x - hi).astype(np.float32)).astype(np.float64)
    rest = np.abs(x - hi - lo) @ np.abs(q).T * scale.T
    zero = np.zeros_like(ref)
    return _kernel_bound(hi, q, scale, ref) + _kernel_bound(lo, q, scale, zero) + rest


def test_few_rows_go_in_split_exact_but_for_the_sums_rounding():
    """Decoding's products (fewer than ``SPLIT_ROWS`` rows): the rows are not rounded to bf16,
    so the result is within the split bound of the exact product of the float32 rows, and
    closer to it than the one-part product of the same rows."""
    torch.manual_seed(3)
    w, b = torch.randn(200, 64) * 0.2, torch.randn(200)
    layer = Int8Linear.from_float(w, b)
    q, scale = _int8_ref(w.numpy())
    use_int8pack(True)
    for rows in range(1, SPLIT_ROWS):
        x = torch.randn(rows, 64)
        with torch.no_grad():
            got = layer(x).numpy()
            one_part = layer(torch.cat([x, x, x, x]))[:rows].numpy()  # 4 rows or more: one part
        x64 = x.numpy().astype(np.float64)
        exact = x64 @ (q * scale).T + b.numpy()
        bound = _split_bound(x64, q, scale, exact)
        assert np.all(np.abs(got - exact) <= bound), np.max(np.abs(got - exact) / bound)
        assert np.abs(one_part - exact).mean() > 1.2 * np.abs(got - exact).mean()


def test_kernel_gradients_are_the_dequantized_products():
    torch.manual_seed(5)
    layer = Int8Linear.from_float(torch.randn(24, 32), torch.randn(24))
    layer.bias.requires_grad_(True)
    x, dy = torch.randn(2, 3, 32), torch.randn(2, 3, 24)
    grads, outputs = {}, {}
    for kernel in (True, False):
        use_int8pack(kernel)
        xg = x.clone().requires_grad_(True)
        y = layer(xg)
        y.backward(dy)
        grads[kernel], outputs[kernel] = (xg.grad, layer.bias.grad.clone()), y.detach()
        layer.bias.grad = None
    use_int8pack(True)
    with torch.no_grad():
        assert torch.equal(layer(x), outputs[True])  # the same numbers with or without autograd
    assert not torch.equal(outputs[True], outputs[False])
    assert_close(grads[True][0], grads[False][0])  # dy @ (q * scale) both
    assert_close(grads[True][1], dy.sum((0, 1)))


@pytest.mark.parametrize("in_features, rows", [(40, 3), (64, DEQUANTIZE_ROWS)])
def test_kernel_refused_layouts_dequantize(in_features, rows):
    """K not a multiple of 16 (the kernel would read past each row) and long products take
    the dequantized path, even with the kernel on."""
    torch.manual_seed(4)
    layer = Int8Linear.from_float(torch.randn(24, in_features), torch.randn(24))
    x = torch.randn(rows, in_features)
    use_int8pack(True)
    with torch.no_grad():
        got = layer(x)
        use_int8pack(False)
        assert torch.equal(got, layer(x))
        if rows > 1:  # one row fewer runs the kernel
            use_int8pack(True)
            assert in_features % 16 or not torch.equal(layer(x[1:]), got[1:])


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("kernel", [True, False], ids=["int8pack", "dequantize"])
def test_logits_against_numpy_int8_reference(head, kernel):
    model = _tiny(scale=0.1)  # at 0.3 attention is near one-hot: bf16 rounding moves it
    ids = _ids(97, 17)
    with torch.no_grad():
        float_logits = model(ids).logits.numpy()
        ref = _reference_model(model, head)
        quantize(model, TorchAoConfig(include_input_output_embeddings=head))
        use_int8pack(kernel)
        got, want = model(ids).logits.numpy(), ref(ids).logits.numpy()
    # The kernel's rows and sums in bfloat16: bf16 against the fp32 model of the same weights
    # (seen: 0.014 at |logit| <= 2.6, 0.7 of the row's bound; the dequantized path: 0).
    assert_close(got, want, "bfloat16" if kernel else "float32")
    assert np.abs(got - want).max() < np.abs(float_logits - want).max()  # int8, not fp32


def _decode_steps(model, ids: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits ``(R * T, V)`` of ``ids`` ``(R, T)``, one token a step through the
    cache: every product has one row, as in decoding."""
    out = []
    for row in ids:
        cache = None
        for t in range(len(row)):
            step = model(row[None, t : t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            out.append(step.logits[0, -1])
    return torch.stack(out)


def test_error_budget_gpt2_shape():
    """The issue's budget for per-channel int8 of every product, done by hand (numpy, float32
    products), on a gpt2-shaped model: max logit error <= 0.13 x std of fp32's logits; ours
    must be as good as that reference, teacher-forced over 3 x 80 decode steps (the kernel,
    rows split) and over the same tokens as one forward each (the kernel, one bf16 part).
    The float32 models (fp32 and the one by hand) run one forward a sequence, which gives
    their decode steps' logits to float32 rounding (checked on the first steps; seen 3e-6
    at std 0.55): a float32 decode step reads the 154 MB head once per token."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_positions=128)).eval()  # 768 wide, V 50257
    ref = _reference_model(model, head=True)
    ids = _ids(50257, 80, rows=3)
    assert ids.shape[1] < DEQUANTIZE_ROWS  # one sequence a forward: every product on the kernel
    use_int8pack(True)
    with torch.no_grad():
        want = torch.cat([model(row[None]).logits[0] for row in ids])
        by_hand = torch.cat([ref(row[None]).logits[0] for row in ids])
        assert_close(_decode_steps(model, ids[:1, :8]), want[:8])
        quantize(model)
        runs = {"decode": _decode_steps(model, ids)}
        runs["forward"] = torch.cat([model(row[None]).logits[0] for row in ids])
    std = want.std().item()
    errors = {k: (x - want).abs().max().item() / std for k, x in runs.items()}
    rms = {k: (x - want).pow(2).mean().sqrt().item() / std for k, x in runs.items()}
    agree = {k: (x.argmax(-1) == want.argmax(-1)).float().mean().item() for k, x in runs.items()}
    ref_max = (by_hand - want).abs().max().item() / std
    ref_rms = (by_hand - want).pow(2).mean().sqrt().item() / std
    ref_agree = (by_hand.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert ref_max <= 0.13, ref_max  # the budget itself holds here (seen 0.105)
    assert max(errors.values()) <= 0.13, errors  # and ours (seen 0.112 decode, 0.108 forward)
    # Decoding: the rows go in exact; only the kernel's bf16 sums add to int8's own error
    # (seen +2% rms). A forward's rows go in as one bf16 part: +4%.
    assert rms["decode"] <= 1.05 * ref_rms and rms["forward"] <= 1.1 * ref_rms, (rms, ref_rms)
    assert rms["decode"] < rms["forward"]  # the split does remove the rows' rounding
    # Random weights give flat logits: fp32's median top-1 margin is 0.18 x std here, so
    # per-channel int8 done any way flips ~5% of steps; the issue's 98% is for gpt2's trained
    # weights, with wide margins.
    assert min(agree.values()) >= ref_agree - 0.02, (agree, ref_agree)


@pytest.mark.parametrize("kernel", [True, False], ids=["int8pack", "dequantize"])
def test_greedy_generate_equals_plain_loop(kernel):
    model = quantize(_tiny())
    use_int8pack(kernel)
    prompt = _ids(97, 5)
    out = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.tolist() == ids.tolist()
    assert len(set(out[0, 5:].tolist())) > 2  # tokens vary


def test_slot_decoder_gives_the_tokens_of_generate():
    model = quantize(_tiny())
    decoder = SlotDecoder(model, num_slots=3, max_length=32)
    assert decoder.vocab_size == 97
    prompts = {2: [5, 17, 42, 8, 61], 0: [33, 2, 71]}
    tokens = {slot: [int(decoder.prefill(slot, p).argmax())] for slot, p in prompts.items()}
    for _ in range(7):
        slots = list(tokens)
        positions = [len(prompts[s]) + len(tokens[s]) - 1 for s in slots]
        logits = decoder.decode(slots, [tokens[s][-1] for s in slots], positions)
        for slot, row in zip(slots, logits, strict=True):
            tokens[slot].append(int(row.argmax()))
    for slot, prompt in prompts.items():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0
        )
        assert tokens[slot] == out[0, len(prompt) :].tolist(), slot


def test_from_pretrained_with_transformers_and_our_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    from torchao.quantization import Int8WeightOnlyConfig

    _tiny().save_pretrained(tmp_path)
    ids = _ids(97, 9)
    want = quantize(_tiny())(ids).logits
    ours = GPT2LMHeadModel.from_pretrained(tmp_path, quantization_config=TorchAoConfig())
    hf = transformers.TorchAoConfig(
        quant_type=Int8WeightOnlyConfig(), include_input_output_embeddings=True
    )
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path, quantization_config=hf)
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, want)
        assert torch.equal(theirs(ids).logits, want)
    assert isinstance(ours.lm_head, Int8Linear) and isinstance(theirs.lm_head, Int8Linear)
    with pytest.raises(QuantizedModelError) as err:
        ours.save_pretrained(tmp_path / "q")
    assert str(err.value) == (
        "save_pretrained of a torchao int8 GPT2LMHeadModel is not supported: transformers has "
        "no torchao layout for GPT-2's Conv1D; save the float model and quantize at load "
        "(from_pretrained(..., quantization_config=TorchAoConfig()))"
    )
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    "cpu, capability, system, path",
    [
        (CpuInfo("AMD", "AMD EPYC 9B14", "x86_64", ("avx2", "avx512f", "avx512_bf16")), "AVX512", "Linux", "int8pack"),
        (CpuInfo("Intel", "Intel Xeon Platinum 8581C", "x86_64", ("avx2", "avx512f")), "AVX512", "Linux", "int8pack"),
        (CpuInfo("Intel", "Intel Core i5-8250U", "x86_64", ("avx2", "fma")), "AVX2", "Linux", "int8pack"),
        (CpuInfo("Intel", "Intel Xeon Platinum 8581C", "x86_64", ("avx2", "avx512f")), "AVX512", "Windows", "dequantize"),
        (CpuInfo("AMD", "AMD EPYC 9B14", "x86_64", ("avx2", "avx512f")), "DEFAULT", "Linux", "dequantize"),
        (CpuInfo("Apple", "arm", "arm64", ()), "DEFAULT", "Darwin", "int8pack"),
        (CpuInfo("ARM", "Neoverse-V2", "aarch64", ()), "SVE256", "Linux", "int8pack"),
        (CpuInfo("unknown", "riscv", "riscv64", ()), "DEFAULT", "Linux", "dequantize"),
    ],
)  # fmt: skip
def test_rule_picks_the_path_by_cpu(cpu, capability, system, path):
    assert int8_path(cpu, capability, system) == path


def test_bad_inputs():
    model = quantize(_tiny())
    with pytest.raises(QuantizedModelError) as err:
        quantize(model)
    assert str(err.value) == (
        "GPT2LMHeadModel is already quantized with torchao int8 (transformer.h.0.attn.c_attn); "
        "quantize the float model once"
    )
    with pytest.raises(InvalidInputError) as err:
        TorchAoConfig("int4_weight_only")
    assert str(err.value) == (
        "TorchAoConfig.quant_type='int4_weight_only' is not supported; gpt2_dual quantizes "
        "'int8_weight_only' (or torchao's Int8WeightOnlyConfig()) only"
    )
    from torchao.quantization import Int8WeightOnlyConfig, PerTensor

    with pytest.raises(InvalidInputError) as err:
        TorchAoConfig(Int8WeightOnlyConfig(granularity=PerTensor()))
    assert str(err.value) == (
        "TorchAoConfig.quant_type=Int8WeightOnlyConfig(granularity=PerTensor) is not supported; "
        "gpt2_dual quantizes 'int8_weight_only' (torchao's Int8WeightOnlyConfig() with PerRow "
        "granularity) only"
    )
    from gpt2_dual.pt.weights import to_canonical

    with pytest.raises(QuantizedModelError) as err:
        to_canonical(model)
    assert str(err.value) == (
        "to_canonical works on float weights, but GPT2LMHeadModel is quantized with torchao "
        "(int8_weight_only); use the float model"
    )


def test_tf_model_refused():
    pytest.importorskip("tensorflow")
    from gpt2_dual.tf import GPT2LMHeadModel as TFModel

    tf_model = TFModel(GPT2Config(vocab_size=97, n_positions=64, n_embd=48, n_head=4, n_layer=1))
    with pytest.raises(InvalidInputError) as err:
        quantize(tf_model)
    assert str(err.value) == (
        "torchao quantization takes a gpt2_dual.pt model, got gpt2_dual.tf.heads."
        "GPT2LMHeadModel; for Keras models use model.quantize('int8')"
    )
