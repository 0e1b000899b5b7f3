"""Config and tokenizers loaded from a Hub repo through the real huggingface_hub client.

The repo is served by a Hub-compatible server on 127.0.0.1 (``tests/hub_server.py``).
"""

from __future__ import annotations

import pytest

from gpt2_dual import GPT2Config, GPT2Tokenizer, GPT2TokenizerFast
from gpt2_dual.hub.bundled import bundled_vocab_dir
from gpt2_dual.hub.resolve import FileNotFoundInRepo, OfflineMiss
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

TEXT = "Hello, I'm a language model, <|endoftext|> 안녕 🤗"


def _repo_files(config: GPT2Config) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in bundled_vocab_dir().iterdir() if p.suffix != ".md"}
    files["config.json"] = config.to_json_string().encode()
    return files


@pytest.mark.parametrize("cls", [GPT2Tokenizer, GPT2TokenizerFast], ids=["pure", "fast"])
def test_tokenizer_and_config_from_hub_then_offline(hub, monkeypatch, cls):
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, pad_token_id=50256)
    hub.add_repo("me/tiny-gpt2", _repo_files(config))
    tokenizer = cls.from_pretrained("me/tiny-gpt2")
    reference = GPT2TokenizerFast.from_pretrained(bundled_vocab_dir())
    assert tokenizer.encode(TEXT) == reference.encode(TEXT)
    assert GPT2Config.from_pretrained("me/tiny-gpt2") == config
    # Everything needed is now in the Hub cache: offline loading works without the server.
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cls.from_pretrained("me/tiny-gpt2").encode(TEXT) == reference.encode(TEXT)
    assert GPT2Config.from_pretrained("me/tiny-gpt2") == config


def test_config_missing_from_repo_names_repo_and_file(hub):
    hub.add_repo("me/no-config", {"vocab.json": b"{}"})
    with pytest.raises(FileNotFoundInRepo, match="'config.json' .*'me/no-config'"):
        GPT2Config.from_pretrained("me/no-config")


def test_offline_miss_says_what_to_do(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineMiss, match="pass a local folder"):
        GPT2Config.from_pretrained("me/never-downloaded")
