"""bitsandbytes 4-bit and 8-bit loading against transformers' own bitsandbytes quantization.

The reference is transformers 4.57 with accelerate and bitsandbytes quantizing the same random
checkpoint on this CPU (``device_map="cpu"``): logits within the ``bnb`` row of
``cases.ATOL``, quantized checkpoints equal byte for byte, each side loading the other's. The
tiny config is sized for bitsandbytes' CPU layout (out features a multiple of 32, in features
of the 64-weight block), which transformers' model needs on an AVX-512 BF16 CPU.

bitsandbytes repacks 4-bit weights on their first forward only on AVX-512 BF16 CPUs (its CPU
kernel needs them): the test of saving and moving after that forward skips elsewhere, with that
reason; undoing the repacking is also checked on any CPU by calling bitsandbytes' repacking
function directly.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cases import BATCH, SEQ, assert_close, tiny_config
from gpt2_dual import BitsAndBytesConfig
from gpt2_dual.heads import HEAD_SPECS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
bnb = pytest.importorskip("bitsandbytes")

import gpt2_dual.pt as gpt  # noqa: E402
from gpt2_dual.pt import bnb as ours_bnb  # noqa: E402

PAD = 98
#: bitsandbytes' CPU layout: every block layer's out features a multiple of 32, in features of 64.
SIZES = dict(n_embd=64, n_inner=128)
NF4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
           bnb_4bit_compute_dtype="float16")  # fmt: skip
FOUR_BIT = [
    dict(load_in_4bit=True, bnb_4bit_quant_type=kind, bnb_4bit_use_double_quant=double,
         bnb_4bit_compute_dtype=compute)
    for kind in ("nf4", "fp4") for double in (False, True)
    for compute in ("float16", "bfloat16", "float32")
]  # fmt: skip
STORAGE = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_quant_storage="bfloat16")
SETTINGS = [*FOUR_BIT, STORAGE, dict(load_in_8bit=True)]
#: bitsandbytes' own test of whether its 4-bit forward repacks weights for its CPU kernel.
REPACKS = bool(bnb.functional.has_avx512bf16())
needs_repacking = pytest.mark.skipif(
    not REPACKS, reason="bitsandbytes repacks 4-bit weights only on CPUs with AVX-512 BF16"
)


def _name(settings: dict) -> str:
    if settings.get("load_in_8bit"):
        return "int8"
    if "bnb_4bit_quant_storage" in settings:
        return f"{settings['bnb_4bit_quant_type']}-in-{settings['bnb_4bit_quant_storage']}"
    double = "-double" if settings["bnb_4bit_use_double_quant"] else ""
    return f"{settings['bnb_4bit_quant_type']}{double}-{settings['bnb_4bit_compute_dtype']}"


def _config(**changes):
    return tiny_config(pad_token_id=PAD, **SIZES, **changes)


def _save_random(head: str, folder: Path, **changes) -> Path:
    """transformers' model of ``head``, every parameter ~ N(0, 0.2), saved in float32."""
    torch.manual_seed(0)
    cls = getattr(transformers, HEAD_SPECS[head].class_name)
    model = cls(transformers.GPT2Config(**_config(**changes).to_dict()))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {
        head: _save_random(head, tmp_path_factory.mktemp(head))
        for head in ("lm", "sequence_classification")
    }


def _ours(head: str, path, settings: dict | None, **kwargs):
    cls = getattr(gpt, HEAD_SPECS[head].class_name)
    quantization = None if settings is None else BitsAndBytesConfig(**settings)
    return cls.from_pretrained(path, quantization_config=quantization, **kwargs)


def _theirs(head: str, path, settings: dict | None, **kwargs):
    cls = getattr(transformers, HEAD_SPECS[head].class_name)
    quantization = None if settings is None else transformers.BitsAndBytesConfig(**settings)
    return cls.from_pretrained(path, quantization_config=quantization, device_map="cpu", **kwargs)


def _outputs(model, head: str) -> dict:
    ids = torch.randint(0, PAD, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return {f: getattr(out, f).float().numpy() for f in HEAD_SPECS[head].outputs}


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _bytes(tensor):
    return tensor.reshape(-1).view(torch.uint8)


def _assert_same_files(actual: Path, expected: Path) -> None:
    """Same keys, dtypes, shapes and bytes; same ``quantization_config`` and ``dtype``."""
    mine, ref = _tensors(actual), _tensors(expected)
    assert sorted(mine) == sorted(ref)
    for key, tensor in ref.items():
        assert (mine[key].dtype, mine[key].shape) == (tensor.dtype, tensor.shape), key
        assert torch.equal(_bytes(mine[key]), _bytes(tensor)), key  # packed bf16 may hold NaNs
    configs = [json.loads((f / "config.json").read_text()) for f in (actual, expected)]
    for field in ("quantization_config", "dtype", "architectures"):
        assert configs[0][field] == configs[1][field], field


def _quantized(model) -> list[str]:
    layers = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return sorted(name for name, m in model.named_modules() if isinstance(m, layers))


def _four_bit_layers(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


# --------------------------------------------------------------------------- transformers parity
@pytest.mark.parametrize("settings", SETTINGS, ids=_name)
@pytest.mark.parametrize("head", ["lm", "sequence_classification"])
def test_quantized_like_transformers_and_saved_the_same(checkpoints, tmp_path, head, settings):
    ours = _ours(head, checkpoints[head], settings, dtype=torch.float32)
    theirs = _theirs(head, checkpoints[head], settings, dtype=torch.float32)
    assert _quantized(ours) == _quantized(theirs)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")  # before it runs: see the next test
    _assert_same_files(tmp_path / "ours", tmp_path / "theirs")
    mine, ref = _outputs(ours, head), _outputs(theirs, head)
    for field in HEAD_SPECS[head].outputs:
        assert_close(mine[field], ref[field], "bnb", what=f"{_name(settings)} {head}.{field}")
    # After a forward (which casts biases in bitsandbytes' own layers, and repacks 4-bit weights
    # on AVX-512 BF16 CPUs): the same bytes again, and the model still computes what it did.
    ours.save_pretrained(tmp_path / "after")
    _assert_same_files(tmp_path / "after", tmp_path / "theirs")
    again = _outputs(ours, head)
    for field in HEAD_SPECS[head].outputs:
        assert_close(again[field], mine[field], "float32", what=f"after saving: {field}")


@needs_repacking
def test_save_after_forward_is_the_loaded_state(checkpoints, tmp_path):
    """The trap: bitsandbytes repacked the weights (bfloat16 block scales), and its own way back
    is lossy; the checkpoint must still be the one loaded, and reload to the same logits."""
    ours = _ours("lm", checkpoints["lm"], NF4)
    ours.save_pretrained(tmp_path / "before")
    logits = _outputs(ours, "lm")["logits"]
    layers = _four_bit_layers(ours)
    assert len(layers) == 4 * ours.config.n_layer  # every block layer fits the CPU layout
    for name, module in layers.items():  # the repacking happened: the trap is armed
        assert module.weight.quant_state.packing_format_for_cpu, name
    layer = layers["transformer.h.0.attn.c_attn"]
    ours.save_pretrained(tmp_path / "after")
    _assert_same_files(tmp_path / "after", tmp_path / "before")
    for folder in ("before", "after"):
        back = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / folder)
        assert_close(_outputs(back, "lm")["logits"], logits, "float32", what=folder)
    ours.to("cpu")  # a move undoes the repacking exactly; the next forward repacks again
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert_close(_outputs(ours, "lm")["logits"], logits, "float32", what="after .to('cpu')")


@pytest.mark.parametrize("settings", [NF4, FOUR_BIT[0], STORAGE], ids=_name)
def test_the_repacking_is_undone_exactly_on_any_cpu(checkpoints, settings):
    """bitsandbytes' repacking function (plain torch, any CPU) applied to each loaded 4-bit
    weight, then gpt2_dual's way back (what save and move use): the loaded bytes, as
    bitsandbytes' own inverse gives them, whose block scales alone are lossy."""
    model = _ours("lm", checkpoints["lm"], settings)
    layers = _four_bit_layers(model)
    assert len(layers) == 4 * model.config.n_layer
    for name, layer in layers.items():
        loaded = layer.weight.data.clone()
        packed, state = bnb.functional._convert_weight_packed_for_cpu(
            loaded.clone(), copy.deepcopy(layer.weight.quant_state)
        )
        assert state.packing_format_for_cpu and not torch.equal(_bytes(packed), _bytes(loaded))
        theirs, _ = bnb.functional._convert_weight_packed_for_cpu_inverse(
            packed, copy.deepcopy(state)
        )
        assert torch.equal(_bytes(theirs), _bytes(loaded)), name
        back = ours_bnb._unpacked_data(packed, state)
        assert back.dtype == loaded.dtype and torch.equal(_bytes(back), _bytes(loaded)), name
        assert state.packing_format_for_cpu  # gpt2_dual's way back leaves the state alone


@pytest.mark.parametrize("dtype", [torch.float16, None], ids=["float16", "None"])
def test_other_dtypes_equal_transformers(checkpoints, dtype):
    """The layers kept in full precision in float16 (None: float16, transformers 4's rule)."""
    ours = _ours("lm", checkpoints["lm"], NF4, dtype=dtype)
    theirs = _theirs("lm", checkpoints["lm"], NF4, dtype=dtype)
    assert ours.transformer.wte.weight.dtype == theirs.transformer.wte.weight.dtype == torch.float16
    mine, ref = _outputs(ours, "lm")["logits"], _outputs(theirs, "lm")["logits"]
    assert_close(mine, ref, "bnb_float16", what="float16 logits")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("bits", [4, 8])
def test_full_precision_modules_are_transformers_choice(tmp_path, bits, tied):
    settings = {f"load_in_{bits}bit": True}
    for head in HEAD_SPECS:
        folder = _save_random(head, tmp_path / head, tie_word_embeddings=tied)
        ours, theirs = _ours(head, folder, settings), _theirs(head, folder, settings)
        assert _quantized(ours) == _quantized(theirs), head
        kept = {"lm_head", "score", "classifier", "qa_outputs"}
        assert not kept & {name.rpartition(".")[2] for name in _quantized(ours)}, head


@pytest.mark.parametrize("bits", [4, 8])
def test_skip_modules_are_honoured(checkpoints, bits):
    settings = {f"load_in_{bits}bit": True, "llm_int8_skip_modules": ["c_fc"]}
    path = checkpoints["sequence_classification"]
    ours = _ours("sequence_classification", path, settings)
    theirs = _theirs("sequence_classification", path, settings)
    assert _quantized(ours) == _quantized(theirs)
    assert "score" in _quantized(ours)  # the list replaces the defaults, as in transformers
    assert not any(name.endswith("c_fc") for name in _quantized(ours))
    _outputs(ours, "sequence_classification")  # runs (score has 3 rows: bitsandbytes' plain
    # CPU layout; transformers' own layer fails there, so there is no reference to compare)
    lm = _ours("lm", checkpoints["lm"], settings)  # a tied lm_head is wte: always kept
    assert "lm_head" not in _quantized(lm) and lm.lm_head.weight is lm.transformer.wte.weight


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("settings", [NF4, FOUR_BIT[0], dict(load_in_8bit=True)], ids=_name)
def test_quantized_checkpoints_cross_load_both_ways(checkpoints, tmp_path, settings):
    ours = _ours("lm", checkpoints["lm"], settings)
    theirs = _theirs("lm", checkpoints["lm"], settings, dtype="auto")
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    mine, ref = _outputs(ours, "lm")["logits"], _outputs(theirs, "lm")["logits"]
    # transformers reads our checkpoint (its config.json says how it is quantized) ...
    back = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path / "ours", device_map="cpu", dtype="auto"
    )
    assert _quantized(back) == _quantized(ours)
    assert_close(_outputs(back, "lm")["logits"], mine, "bnb", what="transformers <- ours")
    # ... and we read transformers' without being told; nothing is quantized again
    ours_back = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "theirs")
    assert ours_back.config.quantization_config == BitsAndBytesConfig(**settings)
    assert_close(_outputs(ours_back, "lm")["logits"], ref, "bnb", what="ours <- transformers")
    assert_close(_outputs(ours_back, "lm")["logits"], mine, "float32", what="ours <- ours")
    ours_back.save_pretrained(tmp_path / "again")
    _assert_same_files(tmp_path / "again", tmp_path / "theirs")


def test_quantized_checkpoint_keeps_its_own_settings(checkpoints, tmp_path, caplog):
    _ours("lm", checkpoints["lm"], NF4).save_pretrained(tmp_path / "nf4")
    other = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4")
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        model = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "nf4", quantization_config=other)
    assert "its own quantization_config is used" in caplog.text
    assert model.config.quantization_config == BitsAndBytesConfig(**NF4)
    model.save_pretrained(tmp_path / "again")
    _assert_same_files(tmp_path / "again", tmp_path / "nf4")  # not quantized again as fp4


def test_flags_device_map_auto_and_transformers_config_object(checkpoints):
    settings = transformers.BitsAndBytesConfig(load_in_8bit=True)
    model = gpt.GPT2LMHeadModel.from_pretrained(
        checkpoints["lm"], quantization_config=settings, device_map="auto"
    )
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.transformer.h[0].attn.c_attn.weight.device.type == expected
    assert (model.is_quantized, model.is_loaded_in_8bit, model.is_loaded_in_4bit) == (
        True, True, False,
    )  # fmt: skip
    assert model.config.quantization_config == BitsAndBytesConfig(load_in_8bit=True)


# --------------------------------------------------------------------------- generation
@pytest.mark.parametrize("settings", [NF4, dict(load_in_8bit=True)], ids=_name)
def test_greedy_generate_equals_a_loop_without_cache(checkpoints, settings):
    model = _ours("lm", checkpoints["lm"], settings, dtype=torch.float32)
    model.generation_config.eos_token_id = model.generation_config.bos_token_id = None
    prompt = torch.tensor([[5, 17, 42, 8], [61, 3, 29, 70]])
    out = model.generate(prompt, max_new_tokens=5, do_sample=False)
    ids = prompt
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


def test_pipeline_generates_with_a_quantized_model(tmp_path):
    from gpt2_dual import GPT2TokenizerFast, pipeline

    folder = _save_random("lm", tmp_path, vocab_size=50257)
    tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")
    tokenizer.save_pretrained(folder)
    kwargs = {"quantization_config": BitsAndBytesConfig(**NF4)}
    pipe = pipeline("text-generation", model=str(folder), framework="pt", model_kwargs=kwargs)
    assert pipe.model.is_loaded_in_4bit
    (out,) = pipe("Hello world", max_new_tokens=4, do_sample=False)
    ids = torch.tensor([tokenizer("Hello world")["input_ids"]])
    expected = pipe.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out["generated_text"] == tokenizer.decode(expected[0], skip_special_tokens=True)
    assert len(expected[0]) == len(ids[0]) + 4


# --------------------------------------------------------------------------- errors
def test_errors_name_the_problem(checkpoints, tmp_path):
    path = checkpoints["lm"]
    with pytest.raises(ValueError) as info:
        gpt.GPT2LMHeadModel.from_pretrained(path, quantization_config=BitsAndBytesConfig())
    assert str(info.value) == (
        "quantization_config sets neither load_in_4bit nor load_in_8bit; set one of them"
    )
    with pytest.raises(ValueError) as info:
        gpt.GPT2LMHeadModel.from_pretrained(path, quantization_config={"quant_method": "gptq"})
    assert str(info.value) == (
        "quantization_config with quant_method='gptq' is not supported: gpt2_dual loads "
        "bitsandbytes 4-bit and 8-bit only"
    )
    model = _ours("lm", path, NF4)
    with pytest.raises(TypeError) as info:
        gpt.weights.to_canonical(model)
    assert str(info.value) == (
        "to_canonical works on float weights, but GPT2LMHeadModel is quantized with "
        "bitsandbytes (nf4); save_pretrained writes its quantized checkpoint"
    )
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert str(info.value) == (
        f"the checkpoint at {str(tmp_path)!r} holds bitsandbytes 4-bit weights "
        "(h.0.attn.c_attn.weight, ...) but its config.json has no quantization_config"
    )
    fp16 = _ours("lm", path, dict(load_in_8bit=True, llm_int8_has_fp16_weight=True))
    with pytest.raises(NotImplementedError, match="llm_int8_has_fp16_weight=True"):
        fp16.save_pretrained(tmp_path / "fp16")


def test_casting_packed_float_storage_is_refused_and_uint8_storage_casts(checkpoints):
    stored = _ours("lm", checkpoints["lm"], STORAGE)
    before = _outputs(stored, "lm")
    with pytest.raises(TypeError) as info:
        stored.to(torch.float16)
    assert str(info.value) == (
        "cannot cast a 4-bit model whose packed weights are stored as torch.bfloat16 "
        "(bnb_4bit_quant_storage): the bytes would be converted as numbers; load it again "
        "with the dtype you want"
    )
    stored.to("cpu")  # a move that keeps the dtype is fine
    assert_close(_outputs(stored, "lm")["logits"], before["logits"], "bnb", what="after .to(cpu)")
    packed = _ours("lm", checkpoints["lm"], NF4)
    weight = packed.transformer.h[0].attn.c_attn.weight
    data = weight.data.clone()
    packed.to(torch.float16)  # uint8 storage: the packed bytes are not floats, only the rest is
    assert torch.equal(weight.data, data)
    assert packed.transformer.wte.weight.dtype == torch.float16


def test_without_bitsandbytes_the_error_names_the_extra(checkpoints):
    """bitsandbytes blocked from importing (as if not installed): float loads still work."""
    code = (
        "import sys; sys.modules['bitsandbytes'] = None\n"
        "from gpt2_dual import BitsAndBytesConfig\n"
        "from gpt2_dual.pt import GPT2LMHeadModel\n"
        f"GPT2LMHeadModel.from_pretrained({str(checkpoints['lm'])!r})\n"
        "try:\n"
        f"    GPT2LMHeadModel.from_pretrained({str(checkpoints['lm'])!r},\n"
        "        quantization_config=BitsAndBytesConfig(load_in_4bit=True))\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "4-bit and 8-bit loading (quantization_config, --load-in-4bit/--load-in-8bit) need "
        'bitsandbytes, which is not installed: pip install "gpt2_dual[bnb]"'
    )
