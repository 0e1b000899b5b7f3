"""transformers' ``Trainer`` and peft on gpt2_dual.pt models with their defaults, nothing to set
or call first: checkpoints in safetensors (the tied ``lm_head`` included), resuming, and LoRA
without ``peft_support.register()``."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cases import assert_close, tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt2_dual.pt as gpt  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


def _ids(seed: int, shape=(8, 8)) -> torch.Tensor:
    return torch.randint(0, 98, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- state_dict
def test_tied_state_dict_saves_with_safetensors_and_loads_both_ways(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = gpt.GPT2LMHeadModel(tiny_config()).eval()
    state = model.state_dict()
    wte, head = state["transformer.wte.weight"], state["lm_head.weight"]
    assert torch.equal(head, wte) and head.data_ptr() != wte.data_ptr()  # a copy: savable
    kept = model.state_dict(keep_vars=True)  # the parameters themselves: still one
    assert kept["lm_head.weight"] is kept["transformer.wte.weight"]
    save_file(state, tmp_path / "model.safetensors")
    saved = load_file(tmp_path / "model.safetensors")
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(**model.config.to_dict()))
    theirs.load_state_dict(saved)  # strict: every key, as transformers' own state dict
    again = gpt.GPT2LMHeadModel(tiny_config()).eval()
    again.load_state_dict(saved)
    assert again.lm_head.weight is again.transformer.wte.weight  # the tie survives loading
    ids = _ids(1, (2, 6))
    with torch.no_grad():
        expected = model(ids).logits
        assert torch.equal(again(ids).logits, expected)
        assert_close(theirs.eval()(ids).logits, expected, "float32", "transformers")


# --------------------------------------------------------------------------- Trainer
def _trainer(model, output_dir: Path, **changes) -> transformers.Trainer:
    """transformers' defaults (``save_safetensors=True`` among them) but for the sizes."""
    data = [{"input_ids": ids, "labels": ids} for ids in _ids(0)]
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), max_steps=4, save_steps=2, per_device_train_batch_size=2,
        report_to=[], use_cpu=True, **changes,
    )  # fmt: skip
    return transformers.Trainer(model=model, args=args, train_dataset=data)


def test_trainer_saves_safetensors_checkpoints_resumes_and_loads_in_both(tmp_path):
    pytest.importorskip("accelerate")  # transformers' Trainer needs it
    assert transformers.TrainingArguments(output_dir=str(tmp_path)).save_safetensors
    torch.manual_seed(0)
    config = tiny_config(resid_pdrop=0.1)  # dropout: resuming must restore the random state too
    start = gpt.GPT2LMHeadModel(config)
    straight = copy.deepcopy(start)
    _trainer(straight, tmp_path / "straight").train()
    checkpoint = tmp_path / "straight" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").is_file()
    assert not (checkpoint / "pytorch_model.bin").exists()

    resumed = copy.deepcopy(start)  # steps 3 and 4 again, from the step-2 checkpoint
    _trainer(resumed, tmp_path / "resumed").train(
        resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-2")
    )
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert_close(b.detach(), a.detach(), "float32", f"resumed {name}")
    assert resumed.lm_head.weight is resumed.transformer.wte.weight

    ids = _ids(1, (2, 6))
    ours = gpt.GPT2LMHeadModel.from_pretrained(checkpoint, config=config).eval()
    hf_config = transformers.GPT2Config(**config.to_dict())
    theirs = transformers.GPT2LMHeadModel.from_pretrained(checkpoint, config=hf_config).eval()
    with torch.no_grad():
        expected = straight.eval()(ids).logits
        assert torch.equal(ours(ids).logits, expected)
        assert_close(theirs(ids).logits, expected, "float32", "transformers from the checkpoint")


# --------------------------------------------------------------------------- peft
LORA_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
from cases import assert_close, tiny_config

order = {order!r}
if order == "peft_first":
    import peft
import gpt2_dual.pt as gpt
from gpt2_dual.pt import peft_support

torch.manual_seed(0)
ours = gpt.GPT2LMHeadModel(tiny_config()).eval()  # built before peft is imported
if order == "gpt2_dual_first":
    assert not peft_support.is_registered() and "transformers" not in sys.modules
    import peft
import transformers

ours.save_pretrained({folder!r})
theirs = transformers.GPT2LMHeadModel.from_pretrained({folder!r}).eval()
config = dict(target_modules=["c_attn"], fan_in_fan_out=True, r=4, init_lora_weights=False)
ours = peft.get_peft_model(ours, peft.LoraConfig(**config))  # no register() anywhere
theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
lora = {{n: p for n, p in ours.named_parameters() if p.requires_grad}}
assert lora and all(".lora_A." in n or ".lora_B." in n for n in lora), sorted(lora)
assert {{n.split(".attn.")[1].split(".")[0] for n in lora}} == {{"c_attn"}}
with torch.no_grad():  # the same adapter weights in both (draws differ by model)
    for name, param in theirs.named_parameters():
        if name in lora:
            param.copy_(lora[name])
ids = torch.randint(0, 98, (3, 9), generator=torch.Generator().manual_seed(1))
got, expected = ours(input_ids=ids, labels=ids), theirs(input_ids=ids, labels=ids)
assert_close(got.logits.detach(), expected.logits.detach(), "float32", "LoRA logits")
got.loss.backward()
expected.loss.backward()
grads = {{n: p.grad for n, p in theirs.named_parameters() if p.requires_grad}}
assert set(grads) == set(lora)
for name, param in lora.items():
    assert_close(param.grad, grads[name], "float32", "gradient of " + name)
print("LoRA equal")
"""


@pytest.mark.parametrize("order", ["gpt2_dual_first", "peft_first"])
def test_lora_without_register_equals_peft_on_transformers(tmp_path, order):
    """In a fresh process (no earlier ``register()``), either import order. ``USE_TF=0``:
    transformers' image utilities, which peft imports, would import TensorFlow (5 s), which
    nothing here uses."""
    pytest.importorskip("peft")
    script = LORA_SCRIPT.format(tests=str(TESTS), order=order, folder=str(tmp_path / "lm"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", USE_TF="0")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LoRA equal" in done.stdout
