"""transformers users' everyday calls on gpt2_dual.pt models: parameter counts, input
embeddings, and from_pretrained's transformers spellings (torch_dtype, device_map,
low_cpu_mem_usage). Reference: transformers 4.57's same class on the same checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cases import tiny_config  # noqa: E402
from gpt2_dual.pt import GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("habits") / "lm"
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_config()).save_pretrained(path)
    return path


@pytest.mark.parametrize("cls", [GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification])
@pytest.mark.parametrize("exclude_embeddings", [False, True])
def test_num_parameters_equals_transformers(folder, cls, exclude_embeddings):
    ours = cls.from_pretrained(folder)
    theirs = getattr(transformers, cls.__name__).from_pretrained(folder)
    for only_trainable in (False, True):
        assert ours.num_parameters(only_trainable, exclude_embeddings) == theirs.num_parameters(
            only_trainable=only_trainable, exclude_embeddings=exclude_embeddings
        )
    block = (ours if cls is GPT2Model else ours.transformer).h[0].requires_grad_(False)
    frozen = sum(p.numel() for p in block.parameters())
    assert ours.num_parameters(only_trainable=True, exclude_embeddings=exclude_embeddings) == (
        ours.num_parameters(exclude_embeddings=exclude_embeddings) - frozen
    )


def test_set_input_embeddings_keeps_the_tie(folder):
    model = GPT2LMHeadModel.from_pretrained(folder)
    new = torch.nn.Embedding(model.config.vocab_size, model.config.n_embd)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new
    assert model.lm_head.weight is new.weight
    with pytest.raises(ValueError) as info:
        model.set_input_embeddings(torch.nn.Embedding(5, model.config.n_embd + 1))
    assert str(info.value) == (
        f"set_input_embeddings needs an nn.Embedding with embedding_dim={model.config.n_embd}, "
        f"got Embedding(5, {model.config.n_embd + 1})"
    )


def test_torch_dtype_is_the_old_spelling_of_dtype(folder):
    with pytest.warns(FutureWarning, match=r"torch_dtype=\.\.\.\) is deprecated, as in transformers; use dtype="):
        model = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"^dtype=torch.float16 and torch_dtype=torch.bfloat16 disagree$"):
        GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float16, torch_dtype=torch.bfloat16)


@pytest.mark.parametrize("device_map", ["cpu", {"": "cpu"}, "auto"])
def test_device_map_places_the_whole_model(folder, device_map):
    model = GPT2LMHeadModel.from_pretrained(folder, device_map=device_map, low_cpu_mem_usage=True)
    expected = "cuda" if device_map == "auto" and torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in model.parameters()} == {expected}


def test_a_device_map_that_splits_the_model_is_refused(folder):
    with pytest.raises(ValueError) as info:
        GPT2LMHeadModel.from_pretrained(folder, device_map={"transformer.h.0": "cpu", "lm_head": 0})
    assert str(info.value).startswith("device_map={'transformer.h.0': 'cpu', 'lm_head': 0} splits the model")
    with pytest.raises(ValueError, match=r"^device='meta' and device_map='cpu' disagree$"):
        GPT2LMHeadModel.from_pretrained(folder, device="meta", device_map="cpu")
