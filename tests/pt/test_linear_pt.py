"""The oneDNN product (the CPU float32 default) gives PyTorch's own numbers and gradients."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cases import assert_close, tiny_config  # noqa: E402
from frameworks import random_state  # noqa: E402
from gpt2_dual.pt import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.pt.linear import (  # noqa: E402
    Conv1D,
    onednn_available,
    onednn_by_default,
    use_onednn,
)
from gpt2_dual.pt.packing import bf16_packing_available, packed_weights  # noqa: E402
from gpt2_dual.pt.weights import load_canonical  # noqa: E402

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build")


@pytest.fixture
def onednn_default():
    yield
    use_onednn(onednn_by_default())


def _model(tie: bool):
    config = tiny_config(tie_word_embeddings=tie)
    model = GPT2LMHeadModel(config)
    load_canonical(model, random_state(config, "lm"))
    return model


def _run(model, ids, onednn: bool):
    use_onednn(onednn)
    model.zero_grad(set_to_none=True)
    with torch.profiler.profile() as prof:
        out = model(ids, labels=ids)
        out.loss.backward()
    ran = {e.key for e in prof.key_averages()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out, grads, ran


@needs_onednn
@pytest.mark.parametrize("tie", [True, False])
def test_onednn_matches_pytorch_forward_and_gradients(onednn_default, tie):
    model = _model(tie)
    ids = torch.randint(0, 99, (3, 7), generator=torch.Generator().manual_seed(0))
    plain, plain_grads, plain_ran = _run(model, ids, onednn=False)
    fast, fast_grads, fast_ran = _run(model, ids, onednn=True)
    onednn = "mkldnn::_linear_pointwise"
    assert onednn in fast_ran and "aten::addmm" not in fast_ran
    assert onednn not in plain_ran
    assert_close(fast.logits.detach(), plain.logits.detach(), what="logits")
    assert_close(fast.loss.detach(), plain.loss.detach(), what="loss")
    for name, grad in plain_grads.items():
        assert fast_grads[name].shape == grad.shape, name
        assert_close(fast_grads[name], grad, what=f"grad {name}")


def test_other_dtypes_and_autocast_take_pytorch_kernels(onednn_default):
    model = _model(tie=True)
    ids = torch.randint(0, 99, (2, 5), generator=torch.Generator().manual_seed(1))
    use_onednn(onednn_available())
    with torch.no_grad(), torch.profiler.profile() as prof:
        model.double()(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.float()(ids)
    assert "mkldnn::_linear_pointwise" not in {e.key for e in prof.key_averages()}
    if onednn_available():  # positive control: the same model in float32 does take oneDNN
        with torch.no_grad(), torch.profiler.profile() as prof:
            model(ids)
        assert "mkldnn::_linear_pointwise" in {e.key for e in prof.key_averages()}


@needs_onednn
def test_compiled_model_calls_the_custom_op(onednn_default):
    use_onednn(True)
    model = _model(tie=True)
    ids = torch.randint(0, 99, (3, 7), generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.profiler.profile() as prof:
        out = compiled(ids, labels=ids)
        out.loss.backward()
    ran = {e.key for e in prof.key_averages()}
    assert {"gpt2_dual::onednn_linear", "gpt2_dual::onednn_mm_nt"} <= ran
    assert_close(out.logits.detach(), model(ids).logits.detach(), what="compiled logits")
    torch._dynamo.reset()


@needs_onednn
@pytest.mark.parametrize("enabled", [True, False])
def test_one_row_follows_the_switch(onednn_default, enabled):
    # A decode step (one token of one sequence) reads cold weights: oneDNN reads them faster.
    use_onednn(enabled)
    model = _model(tie=True)
    with torch.no_grad(), torch.profiler.profile() as prof:
        out = model(torch.tensor([[5]])).logits
    ran = "mkldnn::_linear_pointwise" in {e.key for e in prof.key_averages()}
    assert ran == enabled
    use_onednn(not enabled)
    with torch.no_grad():
        assert_close(out, model(torch.tensor([[5]])).logits, what="oneDNN against MKL, one row")


def test_conv1d_is_x_times_weight_plus_bias(onednn_default):
    layer = Conv1D(5, 3)  # weight (in, out), as transformers' Conv1D
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (3,)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(2))
    expected = (x.double() @ layer.weight.double() + layer.bias.double()).float().detach()
    for onednn in [False] + ([True] if onednn_available() else []):
        use_onednn(onednn)
        assert_close(layer(x).detach(), expected, what=f"Conv1D, onednn={onednn}")



def test_head_layers_stay_nn_linear_modules_that_hooks_see():
    # The heads' products go through the module call, so forward hooks and tools that swap
    # nn.Linear layers (quantizers, adapters) still see the LM head.
    model = _model(tie=True)
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert isinstance(model.lm_head, torch.nn.Linear)
    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7]])).logits
    assert seen == [logits.shape]


needs_bf16_packing = pytest.mark.skipif(
    not bf16_packing_available(), reason="no oneDNN bf16 weight packing on this CPU"
)


@needs_bf16_packing
def test_packed_bf16_weights_give_the_same_numbers_and_are_freed(onednn_default):
    from gpt2_dual.pt import linear as linear_module

    model = _model(tie=True).to(torch.bfloat16).eval()
    ids = torch.tensor([[5, 17, 42], [8, 61, 23]])
    with torch.no_grad():
        plain = model(ids).logits
        step = model(ids[:, :1]).logits
        with packed_weights(model.modules()) as count:
            assert count == 4 * model.config.n_layer + 1  # c_attn, c_proj, c_fc, c_proj; lm_head
            packed, packed_step = model(ids).logits, model(ids[:, :1]).logits
    assert torch.equal(packed, plain) and torch.equal(packed_step, step)
    assert not linear_module._PACKED
    with packed_weights(model.modules()):  # a gradient never reads the packed copies
        loss = model(ids, labels=ids).loss
        loss.backward()
    assert model.lm_head.weight.grad is not None


def test_packing_leaves_float32_alone(onednn_default):
    model = _model(tie=True)
    with packed_weights(model.modules()) as count:
        assert count == 0
