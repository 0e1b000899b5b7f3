"""PyTorch-only behaviour of the models: activations, backends, dtypes, caches, compile,
gradient checkpointing, initialization, meta construction, training parity with transformers."""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import re

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import PT, random_state
from gpt2_dual._config_checks import ACTIVATIONS
from gpt2_dual.checkpoint.names import is_backbone, params
from gpt2_dual.errors import InputError, InvalidInputError
from gpt2_dual.heads import FORMULAS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt2_dual.pt as gpt  # noqa: E402
from gpt2_dual.pt import layers  # noqa: E402
from gpt2_dual.pt.attention import Attention  # noqa: E402
from gpt2_dual.pt.linear import Conv1D  # noqa: E402

PAD = 98
HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


def model_of(head="lm", scale=1.0, backend="sdpa", **changes):
    """A model with the tests' random canonical weights (deviations from 0/1 times ``scale``)."""
    config = tiny_config(pad_token_id=PAD, **changes)
    state = {
        name: (1 + (v - 1) * scale if name.split(".")[-2].startswith("ln_") and "weight" in name
               else v * scale)
        for name, v in random_state(config, head).items()
    }  # fmt: skip
    return PT.build(head, config, state, attn_implementation=backend)


def padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, PAD, (BATCH, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    ids[mask == 0] = PAD
    return ids, mask


# --------------------------------------------------------------------------- activations
def test_every_config_activation_is_implemented():
    assert set(layers.ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_transformers(name):
    from transformers.activations import ACT2FN

    x = torch.cat(
        [
            torch.linspace(-12, 12, 4001),
            torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 3,
        ]
    )
    assert_close(layers.activation(name)(x), ACT2FN[name](x), "float32", name)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(
        InvalidInputError, match=r"unknown activation 'gelu_fancy'; choose one of \["
    ):
        layers.activation("gelu_fancy")


def test_every_formula_has_a_torch_op():
    assert set(layers._OPS) == set(FORMULAS)


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "bool", "float32"])
def test_loss_choice_is_the_input_check_s(num_labels, dtype):
    """The loss follows the rule the shared input check applied (``heads.problem_type_for``)."""
    from gpt2_dual._input_checks import problem_type
    from gpt2_dual.pt.losses import problem_type_for

    config = tiny_config(num_labels=num_labels)
    labels = torch.zeros(2, dtype=getattr(torch, dtype))
    assert problem_type_for(num_labels, labels) == problem_type(config, np.dtype(dtype).kind)


def test_small_integer_labels_are_class_ids():
    model = model_of("sequence_classification")
    ids, _ = padded_batch()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        expected = model(ids, labels=labels).loss
        assert torch.equal(model(ids, labels=labels.to(torch.int16)).loss, expected)


# --------------------------------------------------------------------------- backends
def _attention_ops(model, *args, **kwargs) -> dict[str, int]:
    """How many times each attention op ran in ``model(*args, **kwargs)`` (the profiler)."""
    ops = ("aten::scaled_dot_product_attention", "aten::softmax", "aten::_softmax")
    with torch.no_grad(), torch.profiler.profile() as prof:
        model(*args, **kwargs)
    counts = {e.key: e.count for e in prof.key_averages()}
    return {op: counts.get(op, 0) for op in ops}


def test_backends_switch_and_agree():
    """The switch changes the kernel that runs, not only an attribute: torch's SDPA op once per
    layer under "sdpa", never under "eager" (which runs its own softmax)."""
    model = model_of("lm", backend="eager")
    ids, mask = padded_batch()
    layers_n = model.config.n_layer
    ran = _attention_ops(model, ids, attention_mask=mask)
    assert ran["aten::scaled_dot_product_attention"] == 0 and ran["aten::softmax"] >= layers_n
    with torch.no_grad():
        eager = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("sdpa")
        assert {m.backend for m in model.modules() if isinstance(m, Attention)} == {"sdpa"}
        assert model.attn_implementation == model.transformer.attn_implementation == "sdpa"
        assert_close(model(ids, attention_mask=mask).logits, eager, "float32", "sdpa vs eager")
    assert (
        _attention_ops(model, ids, attention_mask=mask)["aten::scaled_dot_product_attention"]
        == layers_n
    )
    model.set_attn_implementation("eager")  # and back
    assert (
        _attention_ops(model, ids, attention_mask=mask)["aten::scaled_dot_product_attention"] == 0
    )


def test_left_padding_queries_are_finite_and_backends_agree_everywhere():
    # A padding query at the start of a left-padded row sees no real key; it attends itself,
    # on every backend, so even those positions are finite and equal.
    model = model_of("lm", backend="eager")
    ids, mask = padded_batch()
    mask = mask.flip(-1)  # row 1: two padding tokens on the left
    ids[mask == 0] = PAD
    with torch.no_grad():
        eager = model(ids, attention_mask=mask, output_attentions=True)
        model.set_attn_implementation("sdpa")
        sdpa = model(ids, attention_mask=mask).logits
    assert torch.isfinite(eager.logits).all()
    assert_close(sdpa, eager.logits, "float32", "sdpa vs eager, padding queries included")
    first = eager.attentions[0][1, :, 0]  # (H, S): row 1's first (padding) query
    assert torch.equal(first, torch.eye(SEQ)[0].expand_as(first))


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match=r"attn_implementation='xformers' is not supported; choose one of \('eager', 'sdpa', 'flash_attention_2'\)",
    ):
        gpt.GPT2Model(tiny_config(), attn_implementation="xformers")


@pytest.mark.skipif(HAS_FLASH, reason="flash_attn is installed")
def test_flash_attention_without_the_package_says_what_to_do():
    message = "attn_implementation='flash_attention_2' needs the flash-attn package (pip install 'gpt2_dual[flash]', CUDA only); use 'sdpa'"
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        gpt.GPT2LMHeadModel(tiny_config(), attn_implementation="flash_attention_2")


@pytest.mark.skipif(
    not (HAS_FLASH and torch.cuda.is_available()), reason="needs CUDA and flash-attn"
)
@pytest.mark.parametrize("padding", [False, True])
def test_flash_attention_matches_sdpa_on_cuda(padding):
    sdpa = model_of("lm", scale=0.5).to("cuda", torch.bfloat16)
    flash = copy.deepcopy(sdpa)
    flash.set_attn_implementation("flash_attention_2")
    ids, mask = (t.cuda() for t in padded_batch())
    mask = mask if padding else None
    with torch.no_grad():
        for model in (sdpa, flash):
            out = model(ids[:, :4], attention_mask=None if mask is None else mask[:, :4])
            step = model(ids[:, 4:], attention_mask=mask, past_key_values=out.past_key_values)
            model.result = torch.cat([out.logits, step.logits], 1).float().cpu()
    real = torch.ones(BATCH, SEQ, dtype=torch.bool) if mask is None else mask.bool().cpu()
    assert_close(flash.result[real], sdpa.result[real], "bfloat16", "flash vs sdpa")


# --------------------------------------------------------------------------- dtypes and devices
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize(
    ("dtype", "name"), [(torch.bfloat16, "bfloat16"), (torch.float16, "float16")]
)
@pytest.mark.parametrize("upcast", [False, True])
def test_low_precision_forward_close_to_float32(backend, dtype, name, upcast):
    # Half the tests' weight scale: logits of magnitude ~2, the range the tolerance row is for.
    model = model_of("lm", scale=0.5, backend=backend, reorder_and_upcast_attn=upcast)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        low = copy.deepcopy(model).to(dtype)
        assert low.dtype == dtype
        out = low(ids, attention_mask=mask, output_attentions=True)
    assert out.logits.dtype == dtype and out.attentions[0].dtype == dtype
    assert_close(out.logits.float(), expected, name, f"{name} logits")


def test_half_and_double():
    model = model_of("base", scale=0.5)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).last_hidden_state
        double = copy.deepcopy(model).double()(ids, attention_mask=mask).last_hidden_state
        half = copy.deepcopy(model).half()(ids, attention_mask=mask).last_hidden_state
    assert double.dtype == torch.float64 and half.dtype == torch.float16
    assert_close(double, expected, "float32", "float64")
    assert_close(half.float(), expected, "float16", "float16")


# --------------------------------------------------------------------------- caches
def test_legacy_tuples_and_transformers_caches_are_accepted():
    from transformers.cache_utils import DynamicCache as HFDynamicCache

    model = model_of("lm")
    ids, mask = padded_batch()
    with torch.no_grad():
        first = model(ids[:, :4], attention_mask=mask[:, :4])
        legacy = first.past_key_values.to_legacy_cache()
        hf_cache = HFDynamicCache.from_legacy_cache(legacy)
        expected = model(ids, attention_mask=mask).logits[:, 4:]
        for past in (legacy, hf_cache):
            out = model(ids[:, 4:], attention_mask=mask, past_key_values=past)
            assert isinstance(out.past_key_values, gpt.DynamicCache)
            assert_close(out.logits, expected, "float32", type(past).__name__)
    with pytest.raises(
        TypeError, match="past_key_values must be a DynamicCache, a StaticCache or a tuple"
    ):
        model(ids, past_key_values="cache")


def test_static_cache_takes_a_full_length_mask():
    model = model_of("lm")
    ids, mask = padded_batch()
    cache = gpt.StaticCache(model.config, BATCH, 12)
    full_mask = torch.cat([mask, torch.zeros(BATCH, 5, dtype=mask.dtype)], 1)  # (B, S_max)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        model(ids[:, :4], attention_mask=full_mask, past_key_values=cache)
        out = model(ids[:, 4:], attention_mask=full_mask, past_key_values=cache)
    assert cache.get_seq_length() == SEQ and out.past_key_values is cache
    assert_close(out.logits, expected[:, 4:], "float32", "static cache, (B, S_max) mask")
    cache.reset()
    assert cache.get_seq_length() == 0


def test_static_cache_errors():
    model = model_of("lm")
    ids = torch.ones(2, 3, dtype=torch.long)
    config = model.config
    with pytest.raises(ValueError, match=r"^StaticCache max_length=30 exceeds n_positions=24$"):
        gpt.StaticCache(config, 2, 30)
    with pytest.raises(ValueError, match=r"^the StaticCache holds 3 rows; the input has 2$"):
        model(ids, past_key_values=gpt.StaticCache(config, 3, 8))
    with pytest.raises(
        ValueError, match=r"^the StaticCache is torch.bfloat16; the model is torch.float32$"
    ):
        model(ids, past_key_values=gpt.StaticCache(config, 2, 8, dtype=torch.bfloat16))
    cache = gpt.StaticCache(config, 2, 4)
    model(ids, past_key_values=cache)
    with pytest.raises(
        ValueError,
        match=r"^the StaticCache holds max_length=4 positions; 3 cached \+ 2 new tokens do not fit$",
    ):
        model(ids[:, :2], past_key_values=cache)


def test_use_cache_none_reads_the_config():
    model = model_of("lm")
    ids, _ = padded_batch()
    assert model(ids).past_key_values is not None
    model.config.use_cache = False
    assert model(ids).past_key_values is None
    assert model(ids, use_cache=True).past_key_values is not None


# --------------------------------------------------------------------------- compile
def _decode_steps(model, compiled, steps=3, device="cpu"):
    ids, mask = (t.to(device) for t in padded_batch())
    g = torch.Generator().manual_seed(1)
    cache = gpt.StaticCache(model.config, BATCH, SEQ + steps, device=device)
    full = torch.cat(
        [mask, torch.ones(BATCH, steps, dtype=mask.dtype, device=device)], 1
    )  # (B, S_max)
    with torch.no_grad():
        model(ids, attention_mask=full, past_key_values=cache)  # prefill, not compiled
        reference = model(ids, attention_mask=mask)
        for i in range(steps):
            token = torch.randint(0, PAD, (BATCH, 1), generator=g).to(device)
            out = compiled(token, attention_mask=full, past_key_values=cache)
            mask_i = full[:, : SEQ + i + 1]
            reference = model(
                token, attention_mask=mask_i, past_key_values=reference.past_key_values
            )
            assert_close(
                out.logits.cpu(), reference.logits.cpu(), "float32", f"compiled decode step {i}"
            )
            if i == 0:  # every later step must reuse the graph
                torch._dynamo.config.error_on_recompile = True


def test_compile_fullgraph_forward_and_static_decode(fresh_dynamo):
    model = model_of("lm")
    ids, mask = padded_batch()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, use_cache=False).logits
        got = compiled(ids, attention_mask=mask, use_cache=False).logits
    assert_close(got, expected, "float32", "compiled forward")
    torch._dynamo.reset()
    _decode_steps(model, torch.compile(model, fullgraph=True, backend="aot_eager"))


def _head_inputs(head: str) -> dict:
    """A padded batch with the head's labels ((B, N, T) choices for double heads)."""
    ids, mask = padded_batch()
    g = torch.Generator().manual_seed(2)
    if head == "double_heads":
        ids, mask = ids[None].expand(2, -1, -1).clone(), mask[None].expand(2, -1, -1).clone()
        return dict(input_ids=ids, attention_mask=mask, mc_token_ids=mask.sum(-1) - 1,
                    labels=ids.masked_fill(mask == 0, -100),
                    mc_labels=torch.randint(0, BATCH, (2,), generator=g))  # fmt: skip
    inputs = dict(input_ids=ids, attention_mask=mask)
    if head == "lm":
        inputs["labels"] = ids.masked_fill(mask == 0, -100)
    elif head == "sequence_classification":
        inputs["labels"] = torch.randint(0, 3, (BATCH,), generator=g)
    elif head == "token_classification":
        inputs["labels"] = torch.randint(0, 3, (BATCH, SEQ), generator=g).masked_fill(
            mask == 0, -100
        )
    elif head == "question_answering":
        inputs.update(
            start_positions=torch.tensor([1, 3, SEQ + 3]), end_positions=torch.tensor([2, 6, 4])
        )
    return inputs


@pytest.mark.parametrize("head", HEADS)
def test_compile_fullgraph_every_head_with_its_loss(fresh_dynamo, head):
    """Every head's forward, loss included (pooling, pad-token search, problem-type choice,
    position clamping), is one graph: fullgraph=True raises on any graph break."""
    model = model_of(head, use_cache=False)
    inputs = _head_inputs(head)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, got = model(**inputs), compiled(**inputs)
    assert got.keys() == expected.keys()
    for field in expected.keys():
        assert_close(got[field], expected[field], "float32", f"compiled {head}.{field}")


@pytest.mark.slow  # inductor compiles C++: ~45 s on 2 cores
# torch's own inductor import still uses torch.jit.script_method (torch/utils/mkldnn.py).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_inductor_decode(fresh_dynamo):
    model = model_of("lm")
    _decode_steps(model, torch.compile(model, fullgraph=True))


needs_cuda = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compile_cuda_graphs_decode(fresh_dynamo):
    # mode="reduce-overhead": each decode step replays one CUDA graph over the StaticCache's
    # fixed buffers; float32 with TF32 off, so the float32 row of the table applies.
    torch.backends.cuda.matmul.allow_tf32 = False
    model = model_of("lm").cuda()
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    _decode_steps(model, compiled, steps=4, device="cuda")


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize(
    ("dtype", "name"),
    [pytest.param(torch.bfloat16, "bfloat16", marks=needs_cuda, id="bf16-cuda"),
     pytest.param(torch.float16, "float16", marks=needs_cuda, id="fp16-cuda")],
)  # fmt: skip
def test_low_precision_on_cuda_close_to_float32_on_cpu(backend, dtype, name):
    model = model_of("lm", scale=0.5, backend=backend)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        low = copy.deepcopy(model).to("cuda", dtype)
        got = low(ids.cuda(), attention_mask=mask.cuda()).logits
    assert got.dtype == dtype
    real = mask.bool()
    assert_close(got.float().cpu()[real], expected[real], name, f"{name} on CUDA")


# --------------------------------------------------------------------------- training
def _grads(model, ids, mask):
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout masks in both runs
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients():
    model = model_of("lm", resid_pdrop=0.1, attn_pdrop=0.1, embd_pdrop=0.1).train()
    ids, mask = padded_batch()
    expected = _grads(model, ids, mask)
    calls = []
    model.transformer.h[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    got = _grads(model, ids, mask)
    assert len(calls) == 2  # forward, then recomputed in backward
    for name in expected:
        assert_close(got[name], expected[name], "float32", name)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


def test_dropout_is_active_in_training_only():
    model = model_of("lm", resid_pdrop=0.1, attn_pdrop=0.1, embd_pdrop=0.1)
    ids, mask = padded_batch()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("head", ["lm", "sequence_classification"])
def test_gradients_match_transformers(head):
    from test_reference import make_inputs, reference_model

    config = tiny_config(pad_token_id=PAD)
    reference, state = reference_model(head, config)
    model = PT.build(head, config, state)
    inputs = {k: torch.from_numpy(v) for k, v in make_inputs(head, config).items()}
    for m in (model, reference):
        m.train()
        m(**inputs).loss.backward()
    for row in params(config, head):
        path = f"transformer.{row.pt}" if is_backbone(row.canonical) else row.pt
        grad = model.get_parameter(path).grad
        ref_name = f"transformer.{row.canonical}" if is_backbone(row.canonical) else row.canonical
        assert_close(grad, reference.get_parameter(ref_name).grad, "float32", row.canonical)


# --------------------------------------------------------------------------- construction
def test_meta_construction_creates_no_data():
    config = tiny_config()
    with torch.device("meta"):
        model = gpt.GPT2LMHeadModel(config)
    assert all(p.is_meta for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("init", [0.02, 0.05])
def test_init_weights_follow_transformers(init):
    """Init statistics within 6 standard errors of the intended std (the sample std of n
    normal draws has relative standard error 1/sqrt(2n)), for the default initializer_range
    and another one; LayerNorms take config.layer_norm_epsilon (not torch's equal default)."""
    config = tiny_config(
        n_embd=256,
        n_head=4,
        n_inner=None,
        n_layer=2,
        initializer_range=init,
        layer_norm_epsilon=1e-3,
    )
    torch.manual_seed(0)
    model = gpt.GPT2DoubleHeadsModel(config)
    block = model.transformer.h[1]
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(block.ln_1.weight, torch.ones(256)) and not block.ln_2.bias.any()
    assert not block.attn.c_attn.bias.any() and not model.multiple_choice_head.summary.bias.any()
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(layer_norms) == 2 * 2 + 1 and {m.eps for m in layer_norms} == {1e-3}
    for weight, std in [
        (block.attn.c_attn.weight, init),
        (block.mlp.c_fc.weight, init),
        (model.transformer.wpe.weight, init),
        (model.transformer.wte.weight, init),
        (model.multiple_choice_head.summary.weight, init),
        (block.attn.c_proj.weight, init / 2),  # init / sqrt(2 * n_layer)
        (block.mlp.c_proj.weight, init / 2),
    ]:
        n = weight.numel()
        assert abs(weight.std().item() / std - 1) < 6 / math.sqrt(2 * n), (tuple(weight.shape), std)
        assert abs(weight.mean().item()) < 6 * std / math.sqrt(n), (tuple(weight.shape), std)


def test_untied_lm_head_is_its_own_parameter():
    model = gpt.GPT2LMHeadModel(tiny_config(tie_word_embeddings=False))
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.get_output_embeddings() is model.lm_head
    assert model.get_input_embeddings() is model.transformer.wte


def test_build_by_head_name():
    assert type(gpt.build("question_answering", tiny_config())) is gpt.GPT2ForQuestionAnswering
    with pytest.raises(KeyError, match="unknown head 'qa'; choose one of"):
        gpt.build("qa", tiny_config())


# --------------------------------------------------------------------------- head details
def test_logits_to_keep():
    model = model_of("lm")
    ids, _ = padded_batch()
    with torch.no_grad():
        assert_close(
            model(ids, logits_to_keep=2).logits, model(ids).logits[:, -2:], "float32", "last 2"
        )
    with pytest.raises(
        InputError, match="^labels need the logits of every position; leave logits_to_keep=0$"
    ):
        model(ids, labels=ids, logits_to_keep=1)


def test_inputs_embeds_equal_input_ids(caplog):
    from gpt2_dual.heads import _warn_once

    model = model_of("sequence_classification")
    ids, _ = padded_batch()
    ids = ids[:, :5]  # no padding: the last position is the last real token
    _warn_once.cache_clear()
    with torch.no_grad():
        expected = model(ids).logits
        with caplog.at_level(logging.WARNING, logger="gpt2_dual.heads"):
            got = model(inputs_embeds=model.transformer.wte(ids)).logits
    assert_close(got, expected, "float32", "inputs_embeds")
    assert "GPT2ForSequenceClassification cannot see padding in inputs_embeds" in caplog.text


def test_question_answering_loss_ignores_positions_outside_the_input():
    model = model_of("question_answering")
    ids, _ = padded_batch()
    with torch.no_grad():
        out = model(
            ids, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 3, 4])
        )
        outside = model(
            ids, start_positions=torch.tensor([1, 2, 50]), end_positions=torch.tensor([2, 3, 50])
        )
        first_two = model(
            ids[:2], start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([2, 3])
        )
    assert out.loss.item() != outside.loss.item()
    assert_close(outside.loss, first_two.loss, "float32", "row 3 ignored")
    assert out.start_logits.is_contiguous() and np.isfinite(out.loss.item())


class RecordDraws(torch.overrides.TorchFunctionMode):
    """Records the tensor (its data pointer and size) of every random initializer call that
    runs: ``Tensor.normal_``/``uniform_`` and ``torch.nn.init``'s random ones (each counted
    once: the mode is off while the call runs). Calls skipped on ``meta`` never reach it."""

    RANDOM = {torch.Tensor.normal_, torch.Tensor.uniform_} | {
        getattr(torch.nn.init, name)
        for name in ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_",
                     "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_")
    }  # fmt: skip

    def __init__(self):
        super().__init__()
        self.draws = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RANDOM:
            target = args[0] if args else kwargs["tensor"]
            self.draws.append((target.data_ptr(), target.numel()))
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    ("cls", "changes"),
    [
        (gpt.GPT2DoubleHeadsModel, {}),
        (gpt.GPT2LMHeadModel, {"tie_word_embeddings": False}),
        (gpt.GPT2ForTokenClassification, {}),
        (gpt.GPT2Model, {"add_cross_attention": True}),
    ],
)
def test_construction_draws_every_weight_once(cls, changes):
    """Each Linear/Conv1D/Embedding weight (a tied one counted once) is drawn exactly once,
    and nothing else is drawn: no draw on a constructor's tensor that init draws again."""
    with RecordDraws() as recorder:
        model = cls(tiny_config(**changes))
    kinds = torch.nn.Linear | Conv1D | torch.nn.Embedding
    weights = {
        m.weight.data_ptr(): m.weight.numel() for m in model.modules() if isinstance(m, kinds)
    }
    assert sorted(recorder.draws) == sorted(weights.items())


def test_conv1d_on_its_own_draws_its_weight_once():
    """As transformers' Conv1D(nf, nx): weight ~ N(0, 0.02), bias 0."""
    torch.manual_seed(0)
    with RecordDraws() as recorder:
        layer = Conv1D(300, 200)
    assert recorder.draws == [(layer.weight.data_ptr(), 300 * 200)]
    n = layer.weight.numel()
    assert abs(layer.weight.std().item() / 0.02 - 1) < 6 / math.sqrt(2 * n)
    assert not layer.bias.any()
