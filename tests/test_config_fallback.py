"""Bundled configs of the GPT-2 family (offline fallback) and GPT2Config's near-miss warning.

No test reaches the internet: ``hf_env`` points the Hub cache at tmp_path (empty) and
``HF_ENDPOINT`` at a closed port; ``hub`` starts ``hub_server.HubServer``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest

from gpt2_dual import PRESETS, GenerationConfig, GPT2Config
from gpt2_dual import config as config_module
from gpt2_dual.hub import resolve as hub_module
from gpt2_dual.hub.bundled import (
    BUNDLED_CONFIG_FILES,
    BUNDLED_GPT2_REPOS,
    CONFIG_SHA256,
    _verify_dir,
    bundled_config_dir,
    bundled_file,
)
from gpt2_dual.hub.resolve import HubError, OfflineMiss, resolve_file
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

REPOS = sorted(BUNDLED_GPT2_REPOS)
NAMES = sorted({repo.rpartition("/")[2] for repo in REPOS})
TEXT_GENERATION = {"text-generation": {"do_sample": True, "max_length": 50}}
#: Keys of the released files beyond GPT2Config's own fields, per checkpoint.
RELEASE_EXTRAS = {
    "gpt2": {},
    "gpt2-medium": {"n_special": 0, "predict_special_tokens": True},
    "gpt2-large": {},
    "gpt2-xl": {"output_past": True},
    "distilgpt2": {"_num_labels": 1},
}


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    """Each test sees the once-per-process log lines again."""
    monkeypatch.setattr(hub_module, "_announced_bundle", set())
    config_module._warn_near_miss.cache_clear()
    yield
    config_module._warn_near_miss.cache_clear()


def _offline(how: str, monkeypatch) -> dict:
    """Make the Hub unusable in one of three ways; returns from_pretrained's extra keywords."""
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # "unreachable": hf_env already points HF_ENDPOINT at a closed port
    return {"local_files_only": True} if how == "local_files_only" else {}


# -- the files --


def test_pinned_hashes_and_layout():
    assert set(CONFIG_SHA256) == {f"{n}/{f}" for n in NAMES for f in BUNDLED_CONFIG_FILES}
    root = bundled_config_dir("gpt2").parent
    assert _verify_dir(root, CONFIG_SHA256) == root
    for key, expected in CONFIG_SHA256.items():
        raw = (root / key).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == expected
        data = json.loads(raw)
        # The released layout: transformers' sorted two-space JSON; config.json without the
        # trailing newline (edited on the Hub in 2020), generation_config.json with it.
        text = json.dumps(data, indent=2, sort_keys=True)
        assert raw.decode() == (text if key.endswith("/config.json") else text + "\n"), key


def test_corrupted_bundle_is_refused(tmp_path):
    copy = tmp_path / "configs"
    shutil.copytree(bundled_config_dir("gpt2").parent, copy)
    with (copy / "gpt2-xl" / "config.json").open("ab") as f:
        f.write(b" ")
    with pytest.raises(HubError, match=r"bundled file 'gpt2-xl/config.json' .* does not match"):
        _verify_dir(copy, CONFIG_SHA256)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_config_values_match_the_release(name):
    folder = bundled_config_dir(name)
    data = json.loads((folder / "config.json").read_bytes())
    assert {k: data[k] for k in PRESETS[name]} == PRESETS[name]
    assert data["architectures"] == ["GPT2LMHeadModel"]
    assert data["n_ctx"] == data["n_positions"] == 1024
    assert data["task_specific_params"] == TEXT_GENERATION
    assert (data["vocab_size"], data["bos_token_id"], data["eos_token_id"]) == (50257, 50256, 50256)
    assert data["activation_function"] == "gelu_new" and data["layer_norm_epsilon"] == 1e-5
    for key, value in RELEASE_EXTRAS[name].items():
        assert data[key] == value
    generation = json.loads((folder / "generation_config.json").read_bytes())
    assert generation == {
        "_from_model_config": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "transformers_version": "4.26.0.dev0",
    }


@pytest.mark.parametrize("name", NAMES)
def test_transformers_reads_the_same_values(name):
    transformers = pytest.importorskip("transformers")
    folder = bundled_config_dir(name)
    theirs = transformers.GPT2Config.from_pretrained(folder)
    ours = GPT2Config.from_pretrained(folder)
    for field in (*config_module.GPT2_DEFAULTS, "num_labels", "n_ctx", "task_specific_params"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.id2label == theirs.id2label
    gen_theirs = transformers.GenerationConfig.from_pretrained(folder)
    gen_ours = GenerationConfig.from_pretrained(folder)
    assert (gen_ours.bos_token_id, gen_ours.eos_token_id) == (
        gen_theirs.bos_token_id,
        gen_theirs.eos_token_id,
    )


# -- offline fallback through the resolver and from_pretrained --


@pytest.mark.parametrize("how", ["env", "local_files_only", "unreachable"])
@pytest.mark.parametrize("repo_id", REPOS)
def test_from_pretrained_offline_with_empty_cache(hf_env, monkeypatch, caplog, repo_id, how):
    extra = _offline(how, monkeypatch)
    caplog.set_level(logging.INFO, logger="gpt2_dual.hub.resolve")
    name = repo_id.rpartition("/")[2]
    config = GPT2Config.from_pretrained(repo_id, **extra)
    assert {k: getattr(config, k) for k in PRESETS[name]} == PRESETS[name]
    assert config.task_specific_params == TEXT_GENERATION
    assert config.num_labels == (1 if name == "distilgpt2" else 2)
    generation = GenerationConfig.from_pretrained(repo_id, **extra)
    assert (generation.bos_token_id, generation.eos_token_id) == (50256, 50256)
    assert generation.extra == {"_from_model_config": True}
    found = resolve_file(repo_id, "config.json", **extra)
    assert found == bundled_config_dir(repo_id) / "config.json"
    notes = [r.getMessage() for r in caplog.records if "bundled GPT-2 config" in r.getMessage()]
    assert len(notes) == 1 and f"'{repo_id}'" in notes[0]  # logged once per repo
    assert not list(hf_env.glob("models--*"))  # nothing was downloaded or cached


def test_overrides_and_optional_generation_config_offline(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert GPT2Config.from_pretrained("gpt2", n_layer=2).n_layer == 2
    assert GenerationConfig.from_pretrained("gpt2", max_new_tokens=5).max_new_tokens == 5
    found = resolve_file("distilgpt2", "generation_config.json", required=False)
    assert found == bundled_config_dir("distilgpt2") / "generation_config.json"


def test_fallback_limits(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bundled_file("me/gpt2", "config.json") is None
    with pytest.raises(OfflineMiss, match="file 'config.json' of Hub repo 'me/gpt2'"):
        GPT2Config.from_pretrained("me/gpt2")  # not a bundled repo
    with pytest.raises(OfflineMiss, match=r"\(revision 'v1'\)"):
        GPT2Config.from_pretrained("gpt2", revision="v1")  # only the default revision
    with pytest.raises(OfflineMiss, match="file 'sub/config.json'"):
        GPT2Config.from_pretrained("gpt2", subfolder="sub")
    with pytest.raises(KeyError, match="no bundled config for 'me/gpt2'"):
        bundled_config_dir("me/gpt2")


def test_cached_hub_config_wins_over_bundle(hub, monkeypatch):
    served = GPT2Config(n_layer=2, n_embd=32, n_head=4)
    hub.add_repo("gpt2", {"config.json": served.to_json_string().encode()})
    assert GPT2Config.from_pretrained("gpt2") == served  # online: the Hub's file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert GPT2Config.from_pretrained("gpt2") == served  # offline: the cached one, not the bundle
    assert GPT2Config.from_pretrained("openai-community/gpt2").n_layer == 12  # never cached


@pytest.mark.parametrize("framework", ["pt", "tf"])
def test_model_from_pretrained_offline_says_weights_are_not_bundled(hf_env, monkeypatch, framework):
    if framework == "pt":
        pytest.importorskip("torch")
        from gpt2_dual.pt import GPT2LMHeadModel
    else:
        pytest.importorskip("tensorflow")
        from gpt2_dual.tf import GPT2LMHeadModel
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = (
        r"file 'model\.safetensors' of Hub repo 'gpt2' .* offline mode is on .*\(gpt2_dual "
        r"bundles only the tokenizer and config files of 'gpt2', not its weights\)"
    )
    with pytest.raises(OfflineMiss, match=message):
        GPT2LMHeadModel.from_pretrained("gpt2")


# -- near-miss keywords --


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("n_layers", "n_layer"),
        ("n_heads", "n_head"),
        ("vocab_sise", "vocab_size"),
        ("n_embed", "n_embd"),
        ("N_LAYER", "n_layer"),
        ("n_ebmd", "n_embd"),
        ("hidden_sise", "hidden_size"),
        ("num_label", "num_labels"),
        ("layer_norm_epsilom", "layer_norm_epsilon"),
    ],
)
def test_near_miss_keyword_warns_and_is_kept(caplog, key, field):
    with caplog.at_level(logging.WARNING, logger="gpt2_dual.config"):
        config = GPT2Config(**{key: 7})
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"{key!r} is not a GPT-2 config field; did you mean {field!r}?" in record.getMessage()
    assert getattr(config, key) == 7 and config.to_dict()[key] == 7  # kept, as transformers does
    assert getattr(config, field) != 7  # the field itself is untouched


def test_near_miss_on_assignment_once_per_key(caplog):
    config = GPT2Config()
    with caplog.at_level(logging.WARNING, logger="gpt2_dual.config"):
        config.n_heads = 4
        config.n_heads = 8
        config.copy()  # re-reads the kept key: no second warning
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "did you mean 'n_head'" in messages[0]
    assert config.n_heads == 8 and config.n_head == 12


def test_unknown_keys_that_are_no_near_miss_stay_quiet(caplog):
    transformers = pytest.importorskip("transformers")
    keys = {
        *transformers.PretrainedConfig().to_dict(),
        *transformers.GPT2Config().to_dict(),
        *transformers.GenerationConfig().to_dict(),
        "n_ctx", "n_special", "predict_special_tokens", "output_past", "gradient_checkpointing",
        "_num_labels", "_name_or_path", "torch_dtype", "dtype", "transformers_version",
        "architectures", "task_specific_params", "my_note",
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gpt2_dual.config"):
        for key in sorted(keys):
            if key not in config_module.KNOWN_NAMES and key != "model_type":
                GPT2Config(**{key: None})
        for name in NAMES:
            GPT2Config.from_pretrained(bundled_config_dir(name))
    assert [r.getMessage() for r in caplog.records] == []
