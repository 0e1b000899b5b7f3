"""Training habits of transformers users on gpt2_dual.pt models, against transformers 4.57:
gradient checkpointing in both of torch's modes, ``resize_token_embeddings``, peft LoRA,
``from_pretrained``'s ``dtype="auto"`` default (transformers 5's), and ``Trainer``."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cases import HEADS, assert_close, tiny_config
from frameworks import PT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt2_dual.pt as gpt  # noqa: E402
from gpt2_dual.heads import HEAD_SPECS  # noqa: E402
from test_reference import PAD, make_inputs, reference_model, run_reference  # noqa: E402

LM_HEADS = ("lm", "double_heads")


def _ids(seed: int = 0, shape=(3, 7)) -> torch.Tensor:
    return torch.randint(0, PAD, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A saved tiny GPT2LMHeadModel (fresh initialization, as transformers' own)."""
    path = tmp_path_factory.mktemp("training") / "lm"
    torch.manual_seed(0)
    gpt.GPT2LMHeadModel(tiny_config(pad_token_id=PAD)).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- checkpointing
def _grads(model, ids, encoder):
    model.zero_grad()
    encoder.grad = None
    model(ids, encoder_hidden_states=encoder, labels=ids).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, encoder.grad.clone()


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_both_modes_give_the_gradients_of_no_checkpointing(reentrant):
    config = tiny_config(pad_token_id=PAD, add_cross_attention=True)  # dropout off
    model = PT.build("lm", config, reference_model("lm", config)[1]).train()
    ids = _ids()
    encoder = torch.randn(3, 5, config.n_embd, generator=torch.Generator().manual_seed(1))
    encoder.requires_grad_()
    expected, expected_encoder = _grads(model, ids, encoder)
    calls = []
    model.transformer.h[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.is_gradient_checkpointing
    got, got_encoder = _grads(model, ids, encoder)
    assert len(calls) == 2  # forward, then recomputed in backward
    assert got.keys() == expected.keys() == {n for n, _ in model.named_parameters()}
    for name in expected:
        assert_close(got[name], expected[name], "float32", name)
    assert_close(got_encoder, expected_encoder, "float32", "encoder_hidden_states")


def test_reentrant_checkpointing_trains_blocks_behind_frozen_embeddings():
    model = gpt.GPT2LMHeadModel(tiny_config()).train()
    model.transformer.wte.requires_grad_(False)
    model.transformer.wpe.requires_grad_(False)
    ids = _ids()
    model(ids, labels=ids).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.gradient_checkpointing_enable({"use_reentrant": True})
    model(ids, labels=ids).loss.backward()  # torch warns (an error here) if no input needs grad
    for name, grad in expected.items():
        assert_close(model.get_parameter(name).grad, grad, "float32", name)


@pytest.mark.parametrize("head", HEADS)
def test_class_flags_equal_transformers(head):
    ours = getattr(gpt, HEAD_SPECS[head].class_name)
    theirs = getattr(transformers, HEAD_SPECS[head].class_name)
    assert ours.can_generate() is theirs.can_generate()
    assert ours.supports_gradient_checkpointing is theirs.supports_gradient_checkpointing is True
    assert ours.main_input_name == theirs.main_input_name == "input_ids"


# --------------------------------------------------------------------------- resize
def _old_vocab(fields: dict, head: str, vocab: int) -> dict:
    """The output fields, with LM logits cut to the first ``vocab`` tokens."""
    out = {k: v for k, v in fields.items() if k not in ("past_key_values", "loss")}
    if head in LM_HEADS:
        out["logits"] = out["logits"][..., :vocab]
    return out


@pytest.mark.parametrize("head", HEADS)
def test_resize_keeps_old_rows_outputs_and_tie_as_transformers(head):
    config = tiny_config(pad_token_id=PAD)
    reference, state = reference_model(head, config)
    model = PT.build(head, config, state)
    inputs = {k: v for k, v in make_inputs(head, config).items() if "labels" not in k}
    before = PT.run(model, **inputs)
    old = model.get_input_embeddings().weight.detach().clone()
    wte = model.get_input_embeddings()

    returned = model.resize_token_embeddings(104, pad_to_multiple_of=8)  # 104: a multiple
    reference.resize_token_embeddings(104, pad_to_multiple_of=8)

    assert (
        returned is wte and wte.weight.shape == (104, config.n_embd) and wte.num_embeddings == 104
    )
    assert model.config.vocab_size == reference.config.vocab_size == 104
    assert torch.equal(wte.weight[:99], old)
    if head in LM_HEADS:
        assert model.lm_head.weight is wte.weight and model.lm_head.out_features == 104
    after = PT.run(model, **inputs)
    assert after.keys() == before.keys()
    theirs = run_reference(reference, **inputs)
    for name, value in _old_vocab(after, head, 99).items():
        assert_close(value, _old_vocab(before, head, 99)[name], "float32", f"{head}.{name} kept")
        ref = theirs[name]
        ref = ref[..., :99] if head in LM_HEADS and name == "logits" else ref
        assert_close(value, ref.numpy() if hasattr(ref, "numpy") else ref, "float32", name)


@pytest.mark.parametrize(
    ("new", "multiple"), [(None, None), (None, 64), (101, 8), (90, None), (99, 1), (3, 4)]
)
def test_resize_sizes_equal_transformers(lm_folder, new, multiple):
    ours = gpt.GPT2LMHeadModel.from_pretrained(lm_folder)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(lm_folder)
    old = ours.transformer.wte.weight.detach().clone()
    ours.resize_token_embeddings(new, pad_to_multiple_of=multiple)
    theirs.resize_token_embeddings(new, pad_to_multiple_of=multiple)
    size = theirs.get_input_embeddings().weight.shape[0]
    assert ours.transformer.wte.weight.shape[0] == ours.config.vocab_size == size
    assert ours.lm_head.weight is ours.transformer.wte.weight
    kept = min(size, 99)
    assert torch.equal(ours.transformer.wte.weight[:kept], old[:kept])
    logits = ours(_ids(shape=(2, 5)).clamp(max=kept - 1)).logits
    assert logits.shape == (2, 5, size)


def test_mean_resizing_new_rows_are_the_old_mean_as_transformers(lm_folder):
    ours = gpt.GPT2LMHeadModel.from_pretrained(lm_folder)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(lm_folder)
    mean = ours.transformer.wte.weight.detach().mean(0)
    torch.manual_seed(0)
    ours.resize_token_embeddings(110)
    theirs.resize_token_embeddings(110)
    # N(mean, 1e-9 x covariance): within float32 rounding of the mean (here ~1e-6 apart)
    new = ours.transformer.wte.weight.detach()[99:]
    assert_close(new, mean.expand(11, -1), "float32", "new rows vs old mean")
    assert_close(new, theirs.transformer.wte.weight.detach()[99:], "float32", "vs transformers")
    assert not torch.equal(new[0], new[1])  # drawn, not copied


def test_resize_without_mean_resizing_draws_from_the_initializer():
    model = gpt.GPT2Model(tiny_config())
    torch.manual_seed(0)
    model.resize_token_embeddings(99 + 400, mean_resizing=False)
    new = model.wte.weight.detach()[99:]
    assert abs(new.std().item() / model.config.initializer_range - 1) < 0.05
    assert abs(new.mean().item()) < 0.002  # 12,800 draws: the mean's std is ~1.8e-4


def test_resize_untied_lm_head_as_transformers():
    config = tiny_config(pad_token_id=PAD, tie_word_embeddings=False)
    reference, state = reference_model("lm", config)
    model = PT.build("lm", config, state)
    old_head = model.lm_head.weight.detach().clone()
    inputs = {k: v for k, v in make_inputs("lm", config).items() if k != "labels"}
    model.resize_token_embeddings(120)
    reference.resize_token_embeddings(120)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.lm_head.weight.shape == reference.lm_head.weight.shape == (120, config.n_embd)
    assert model.lm_head.out_features == 120
    assert torch.equal(model.lm_head.weight[:99], old_head)
    ours = PT.run(model, **inputs)["logits"][..., :99]
    assert_close(ours, run_reference(reference, **inputs)["logits"][..., :99], "float32", "logits")


def test_resize_saves_loads_back_and_in_transformers(lm_folder, tmp_path):
    model = gpt.GPT2LMHeadModel.from_pretrained(lm_folder)
    model.resize_token_embeddings(101, pad_to_multiple_of=16)  # 112
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == 112
    ids = _ids() + 10  # some of the new tokens too
    with torch.no_grad():
        expected = model(ids).logits
        again = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
        assert (
            again.config.vocab_size == 112 and again.lm_head.weight is again.transformer.wte.weight
        )
        assert torch.equal(again(ids).logits, expected)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
        assert_close(theirs(ids).logits, expected, "float32", "transformers on the resized file")


def test_resize_errors_and_no_op():
    model = gpt.GPT2LMHeadModel(tiny_config())
    wte = model.transformer.wte
    weight = wte.weight
    assert model.resize_token_embeddings() is wte and wte.weight is weight
    assert model.resize_token_embeddings(99) is wte and model.config.vocab_size == 99
    for kwargs, shown in [({"pad_to_multiple_of": 2.5}, "pad_to_multiple_of must be a positive integer, got 2.5"),
                          ({"new_num_tokens": 0}, "new_num_tokens must be a positive integer, got 0"),
                          ({"new_num_tokens": True}, "new_num_tokens must be a positive integer, got True")]:  # fmt: skip
        with pytest.raises(ValueError) as info:
            model.resize_token_embeddings(**kwargs)
        assert str(info.value) == shown
    assert model.config.vocab_size == 99 and wte.weight.shape[0] == 99
    assert (
        model.resize_token_embeddings(np.int64(100)).num_embeddings
        == model.config.vocab_size
        == 100
    )
    with pytest.raises(AttributeError, match="vocab_size cannot change after a model was built"):
        model.config.vocab_size = 100  # still locked for everyone else


# --------------------------------------------------------------------------- peft
def test_peft_support_imports_neither_peft_nor_transformers():
    code = (
        "import sys, gpt2_dual.pt, gpt2_dual.pt.peft_support as s; "
        "assert not s.is_registered(); "
        "assert 'peft' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_lora_trains_saves_reloads_and_equals_transformers(lm_folder, tmp_path):
    peft = pytest.importorskip("peft")
    from gpt2_dual.pt import peft_support

    assert peft_support.is_registered()  # importing peft did it (test_trainer_peft_pt.py)
    peft_support.register()  # calling it anyway changes nothing
    from transformers.pytorch_utils import Conv1D

    base = gpt.GPT2LMHeadModel.from_pretrained(lm_folder)
    assert isinstance(base.transformer.h[0].attn.c_attn, Conv1D)
    # the same warning transformers' GPT-2 gets: peft switches fan_in_fan_out on for Conv1D
    with pytest.warns(UserWarning, match="fan_in_fan_out is set to False"):
        model = peft.get_peft_model(base, peft.LoraConfig(target_modules=["c_attn"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".attn.")[1].split(".")[0] for n in trainable} == {"c_attn"}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    ids = _ids(shape=(4, 12))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        assert all((p.grad is not None) == p.requires_grad for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(losses)), losses  # every step lowers it
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)

    model.eval()
    model.save_pretrained(tmp_path)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        reloaded = peft.PeftModel.from_pretrained(
            gpt.GPT2LMHeadModel.from_pretrained(lm_folder), tmp_path
        )
        assert torch.equal(reloaded(input_ids=ids).logits, expected)
        theirs = peft.PeftModel.from_pretrained(
            transformers.GPT2LMHeadModel.from_pretrained(lm_folder), tmp_path
        )
        assert_close(theirs(input_ids=ids).logits, expected, "float32", "transformers + LoRA")
        merged = reloaded.merge_and_unload()
        assert type(merged) is gpt.GPT2LMHeadModel
        assert_close(merged(ids).logits, expected, "float32", "merged LoRA")


# --------------------------------------------------------------------------- dtype "auto"
@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16") / "lm"
    torch.manual_seed(0)
    gpt.GPT2LMHeadModel(tiny_config()).to(torch.bfloat16).save_pretrained(path)
    return path


def test_bfloat16_checkpoint_loads_as_bfloat16_by_default_as_transformers_auto(bf16_folder):
    assert json.loads((bf16_folder / "config.json").read_text())["dtype"] == "bfloat16"
    ours = gpt.GPT2LMHeadModel.from_pretrained(bf16_folder)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(bf16_folder, dtype="auto")
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    forced = gpt.GPT2LMHeadModel.from_pretrained(bf16_folder, dtype=torch.float32)
    assert {p.dtype for p in forced.parameters()} == {torch.float32}
    assert torch.equal(forced.transformer.wte.weight, ours.transformer.wte.weight.float())
    with pytest.warns(FutureWarning, match="torch_dtype"):
        old_spelling = gpt.GPT2LMHeadModel.from_pretrained(bf16_folder, torch_dtype=torch.float32)
    assert old_spelling.dtype == torch.float32


def test_auto_without_a_config_dtype_takes_the_checkpoints(bf16_folder, tmp_path):
    for item in bf16_folder.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    del config["dtype"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, dtype="auto")
    assert ours.dtype == theirs.dtype == torch.bfloat16


# --------------------------------------------------------------------------- Trainer
def test_transformers_trainer_trains_two_steps(tmp_path):
    pytest.importorskip("accelerate")  # transformers' Trainer needs it (peft brings it)
    torch.manual_seed(0)
    model = gpt.GPT2LMHeadModel(tiny_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = [{"input_ids": ids, "labels": ids} for ids in _ids(shape=(4, 8))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
        use_cpu=True,
        # torch.save's pytorch_model.bin (the default, safetensors: test_trainer_peft_pt.py)
        save_safetensors=False,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True},
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    assert math.isfinite(result.training_loss) and result.global_step == 2
    assert model.is_gradient_checkpointing
    assert trainer.state.total_flos == 2 * model.floating_point_ops(
        {"input_ids": _ids(shape=(2, 8))}
    )
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), sorted(set(before) - set(changed))
    checkpoint = tmp_path / "checkpoint-2"
    saved = gpt.GPT2LMHeadModel.from_pretrained(checkpoint, config=model.config)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(saved(ids).logits, model.eval()(ids).logits)


def test_floating_point_ops_equals_transformers(lm_folder):
    batch = {"input_ids": _ids(shape=(2, 8))}
    ours = gpt.GPT2LMHeadModel.from_pretrained(lm_folder)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(lm_folder)
    for exclude in (True, False):
        assert ours.floating_point_ops(batch, exclude) == theirs.floating_point_ops(batch, exclude)
    assert ours.floating_point_ops({}) == 0


def test_enable_input_require_grads_as_transformers():
    model = gpt.GPT2LMHeadModel(tiny_config()).requires_grad_(False)
    seen = []
    model.transformer.h[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].requires_grad)
    )
    model.enable_input_require_grads()
    model.enable_input_require_grads()  # once, not twice
    model(_ids())
    model.disable_input_require_grads()
    model(_ids())
    assert seen == [True, False]
    assert np.isfinite(model(_ids()).logits.detach().numpy()).all()
