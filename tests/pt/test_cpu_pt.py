"""The opt-in oneDNN linear path gives the default path's numbers and gradients."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cases import assert_close, tiny_config  # noqa: E402
from frameworks import random_state  # noqa: E402
from gpt2_dual.pt import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.pt.cpu import onednn_available, use_onednn_linear  # noqa: E402
from gpt2_dual.pt.weights import load_canonical  # noqa: E402

pytestmark = pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build")


def _pair():
    config = tiny_config(tie_word_embeddings=False)
    state = random_state(config, "lm")
    models = []
    for _ in range(2):
        model = GPT2LMHeadModel(config.copy())
        load_canonical(model, state)
        models.append(model)
    return models[0], use_onednn_linear(models[1])


def test_forward_and_gradients_match_the_default_path():
    plain, fast = _pair()
    ids = torch.randint(0, 99, (3, 7), generator=torch.Generator().manual_seed(0))
    outs = [m(ids, labels=ids) for m in (plain, fast)]
    with torch.profiler.profile() as prof:
        fast(ids)
    ran = {e.key for e in prof.key_averages()}
    assert "gpt2_dual::onednn_linear" in ran and "aten::addmm" not in ran
    assert_close(outs[1].logits.detach(), outs[0].logits.detach(), what="logits")
    assert_close(outs[1].loss.detach(), outs[0].loss.detach(), what="loss")
    for out in outs:
        out.loss.backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert_close(q.grad, p.grad, what=f"grad {name}")


def test_other_dtypes_keep_the_default_path():
    plain, fast = _pair()
    ids = torch.randint(0, 99, (2, 5), generator=torch.Generator().manual_seed(1))
    plain, fast = plain.double(), fast.double()
    assert_close(fast(ids).logits.detach(), plain(ids).logits.detach(), what="float64 logits")
