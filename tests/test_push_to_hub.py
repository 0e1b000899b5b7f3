"""push_to_hub (models of both frameworks, tokenizers, configs) and what help() shows.

Pushes go through the real huggingface_hub client (``create_repo``, ``create_branch``,
``upload_folder``) to the Hub-compatible server of ``tests/hub_server.py``, then load back with
``from_pretrained`` from the same server.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pydoc
import re

import numpy as np
import pytest

from cases import tiny_config
from frameworks import has
from gpt2_dual import GenerationConfig, GPT2Config, GPT2Tokenizer, GPT2TokenizerFast
from gpt2_dual.hub.bundled import bundled_vocab_dir
from gpt2_dual.hub.resolve import HubError, RepoNotFound
from hub_server import HubServer, hf_env_fixture, hub_fixture  # noqa: F401

TOKEN = "hf_test_write"
TEXT = "Hello, I'm a language model, <|endoftext|> 안녕"


@pytest.fixture(name="push_hub")
def push_hub_fixture(hub: HubServer) -> HubServer:
    """The ``hub`` server; push through ``_push`` (see there)."""
    return hub


def _push(obj, repo_id: str, **kwargs):
    """``obj.push_to_hub(repo_id, token=TOKEN, **kwargs)`` as in a session whose HF_ENDPOINT was
    set before huggingface_hub was imported.

    huggingface_hub reads ``HF_ENDPOINT`` once, at its import, into ``constants.ENDPOINT``, and
    parses the commit URL the Hub answers against it (``CommitInfo``); gpt2_dual passes the
    endpoint of the moment to every call, so only that parse sees the import-time value. During
    the push, ``constants.ENDPOINT`` is set to what that import would have read (the server);
    no behaviour of huggingface_hub is replaced. ``test_endpoint_changed_after_import`` pushes
    without this.
    """
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "ENDPOINT", os.environ["HF_ENDPOINT"])
        return obj.push_to_hub(repo_id, **{"token": TOKEN, **kwargs})


def _torch_model():
    torch = pytest.importorskip("torch")
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_config()).eval()


# -- configs and tokenizers --


def test_config_push_and_load_back(push_hub):
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, pad_token_id=0)
    info = _push(config, "me/tiny")
    assert info.commit_url.startswith(f"{push_hub.url}/me/tiny/commit/")
    assert info.oid == push_hub.commits[-1].commit
    assert GPT2Config.from_pretrained("me/tiny") == config
    (commit,) = push_hub.commits
    assert (commit.summary, commit.paths) == ("Upload config", ("config.json",))
    assert commit.revision == "main"


def test_generation_config_push_and_load_back(push_hub):
    generation = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.9)
    _push(generation, "me/tiny", commit_message="decoding defaults")
    assert GenerationConfig.from_pretrained("me/tiny") == generation
    assert push_hub.commits[-1].summary == "decoding defaults"


@pytest.mark.parametrize("cls", [GPT2Tokenizer, GPT2TokenizerFast], ids=["pure", "fast"])
def test_tokenizer_push_and_load_back(push_hub, cls):
    tokenizer = cls.from_pretrained(bundled_vocab_dir(), pad_token="<|endoftext|>")
    _push(tokenizer, "me/tok")
    back = cls.from_pretrained("me/tok")
    assert back.encode(TEXT) == tokenizer.encode(TEXT)
    assert back.pad_token == "<|endoftext|>"
    commit = push_hub.commits[-1]
    assert commit.summary == "Upload tokenizer"
    written = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"}
    assert written <= {*commit.paths}


# -- models --


def test_torch_model_push_load_back_and_unchanged_repush(push_hub):
    torch = pytest.importorskip("torch")
    from gpt2_dual.pt import GPT2LMHeadModel

    model = _torch_model()
    _push(model, "me/tiny-gpt2")
    _push(GPT2TokenizerFast.from_pretrained(bundled_vocab_dir()), "me/tiny-gpt2")
    files = push_hub.files("me/tiny-gpt2")
    assert {"config.json", "generation_config.json", "model.safetensors", "vocab.json"} <= {*files}
    assert push_hub.commits[0].summary == "Upload model"

    back = GPT2LMHeadModel.from_pretrained("me/tiny-gpt2")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        np.testing.assert_array_equal(back(ids).logits.numpy(), model(ids).logits.numpy())
    assert GPT2TokenizerFast.from_pretrained("me/tiny-gpt2").encode(TEXT)

    commits = len(push_hub.commits)
    _push(model, "me/tiny-gpt2")  # same bytes: huggingface_hub skips the commit
    assert len(push_hub.commits) == commits


def test_torch_model_save_options_pass_through(push_hub):
    model = _torch_model()
    _push(model, "me/bin", safe_serialization=False)
    files = set(push_hub.files("me/bin"))
    assert "pytorch_model.bin" in files and "model.safetensors" not in files


def test_keras_model_push_and_load_back(push_hub):
    pytest.importorskip("tensorflow")
    from gpt2_dual.tf import GPT2LMHeadModel
    from gpt2_dual.tf.weights import to_canonical

    model = GPT2LMHeadModel(tiny_config())
    _push(model, "me/tiny-keras")
    assert push_hub.commits[-1].summary == "Upload model"
    back = GPT2LMHeadModel.from_pretrained("me/tiny-keras")
    ours, theirs = to_canonical(model), to_canonical(back)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key], err_msg=key)


# -- repo options --


def test_private_repo_needs_the_token_to_load(push_hub):
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4)
    _push(config, "me/secret", private=True)
    with pytest.raises(RepoNotFound, match="'me/secret' not found"):
        GPT2Config.from_pretrained("me/secret", token=False)
    assert GPT2Config.from_pretrained("me/secret", token=TOKEN) == config


def test_revision_creates_a_branch(push_hub):
    _push(GPT2Config(n_layer=2, n_embd=32, n_head=4), "me/tiny")
    _push(GPT2Config(n_layer=3, n_embd=32, n_head=4), "me/tiny", revision="dev")
    assert GPT2Config.from_pretrained("me/tiny", revision="dev").n_layer == 3
    assert GPT2Config.from_pretrained("me/tiny").n_layer == 2
    assert push_hub.commits[-1].revision == "dev"


def test_create_pr(push_hub):
    _push(GPT2Config(n_layer=2, n_embd=32, n_head=4), "me/tiny")
    info = _push(
        GPT2Config(n_layer=4, n_embd=32, n_head=4),
        "me/tiny",
        create_pr=True,
        commit_description="more layers",
    )
    assert info.pr_url == f"{push_hub.url}/me/tiny/discussions/1"
    commit = push_hub.commits[-1]
    assert (commit.revision, commit.description) == ("refs/pr/1", "more layers")
    assert GPT2Config.from_pretrained("me/tiny").n_layer == 2  # main unchanged
    assert GPT2Config.from_pretrained("me/tiny", revision="refs/pr/1").n_layer == 4


def test_repo_id_without_owner_goes_under_the_user(push_hub):
    info = _push(GPT2Config(), "plain")
    assert info.repo_url.repo_id == "me/plain"
    assert "config.json" in push_hub.files("me/plain")


# -- errors --


def test_push_errors_say_what_to_do(push_hub, monkeypatch):
    config = GPT2Config()
    with pytest.raises(HubError, match=r"refused to push to Hub repo 'me/x' .*HTTP 401.*log in"):
        _push(config, "me/x", token=False)
    with pytest.raises(HubError, match=r"refused to push to Hub repo 'other/x' .*HTTP 403"):
        _push(config, "other/x")
    with pytest.raises(ValueError, match="push_to_hub needs a Hub repo id"):
        _push(config, "../up")
    assert push_hub.commits == []
    served = len(push_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"cannot push to Hub repo 'me/x': offline mode is on"):
        _push(config, "me/x")
    assert len(push_hub.requests) == served


def test_unreachable_hub(hf_env):
    # hf_env points HF_ENDPOINT at a closed port
    with pytest.raises(HubError, match=r"could not reach the Hub to push to Hub repo 'me/x'"):
        GPT2Config().push_to_hub("me/x", token=TOKEN)


def test_endpoint_changed_after_import(hub):
    """huggingface_hub parses the commit URL against the endpoint it read at its import."""
    from huggingface_hub import constants

    if hub.url == constants.ENDPOINT:
        pytest.skip("huggingface_hub was imported with this server's endpoint")
    with pytest.raises(HubError, match="HF_ENDPOINT changed after huggingface_hub was imported"):
        GPT2Config().push_to_hub("me/late", token=TOKEN)
    assert "config.json" in hub.files("me/late")  # the commit itself was made


# -- help() --


def _public_classes() -> list:
    """The neutral classes, and each framework's model classes; a framework that is not
    installed is one visible skip, and one that is but does not import fails collection."""
    classes = [GPT2Config, GenerationConfig, GPT2Tokenizer, GPT2TokenizerFast]
    params = [pytest.param(c, id=f"{c.__module__}.{c.__name__}") for c in classes]
    for module, needs in (("gpt2_dual.pt", "torch"), ("gpt2_dual.tf", "tensorflow")):
        if not has(needs):
            skip = pytest.mark.skip(reason=f"no {needs}")
            params.append(pytest.param(None, id=module, marks=skip))
            continue
        for c in importlib.import_module(module).MODEL_CLASSES.values():
            params.append(pytest.param(c, id=f"{c.__module__}.{c.__name__}"))
    return params


@pytest.mark.parametrize("cls", _public_classes())
def test_help_shows_own_docs_and_every_option(cls):
    assert cls.__doc__ and pydoc.render_doc(cls).count(inspect.getdoc(cls).splitlines()[0]) >= 1
    if "Tokenizer" not in cls.__name__:  # the tokenizers' __init__ is theirs to document
        init_doc = pydoc.getdoc(cls.__init__)
        assert init_doc.startswith("Build "), init_doc  # not object's, nn.Module's or Keras'
    for method, options in [
        ("from_pretrained", {"revision", "cache_dir", "local_files_only", "token", "subfolder"}),
        ("push_to_hub", {"token", "private", "commit_message", "revision", "create_pr"}),
    ]:
        bound = getattr(cls, method)
        params = [p for p in inspect.signature(bound).parameters if p != "self"]  # unbound
        assert options <= set(params), (method, params)
        assert params[0] in ("path_or_repo_id", "repo_id")  # no cls, no model
        doc = pydoc.render_doc(bound)
        assert "Args:" in doc and not re.search(r"; see ``gpt2_dual\.\w+\.weights", doc)
    if "Model" in cls.__name__:
        params = inspect.signature(cls.from_pretrained).parameters
        assert {"config", "dtype", "strict"} <= set(params)
        assert "max_shard_size" in inspect.signature(cls.save_pretrained).parameters
        assert "cls:" not in pydoc.getdoc(cls.from_pretrained)
        assert "model:" not in pydoc.getdoc(cls.save_pretrained)
