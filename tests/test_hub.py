"""The Hub/local-folder resolver, through the real huggingface_hub client and a local Hub server.

No test reaches the internet: ``hf_env`` points the Hub cache at tmp_path and ``HF_ENDPOINT`` at
a closed port; ``hub`` starts ``hub_server.HubServer`` and points ``HF_ENDPOINT`` at it.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_dual.hub import resolve as hub_module
from gpt2_dual.hub.bundled import BUNDLED_SHA256, _verify_dir
from gpt2_dual.hub.resolve import (
    BUNDLED_GPT2_REPOS,
    FileNotFoundInRepo,
    HubError,
    LocalFolderNotFound,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
    bundled_vocab_dir,
    resolve_file,
    resolve_snapshot,
)
from hub_server import HubServer, closed_port, hf_env_fixture, hub_fixture  # noqa: F401

CONFIG = b'{"n_layer": 2}'
OFFLINE_MSG = (
    r"is not in the local Hub cache and offline mode is on "
    r"\(HF_HUB_OFFLINE=1 or local_files_only=True\); run once online or pass a local folder"
)


def _tiny(hub: HubServer, **files: bytes) -> str:
    return hub.add_repo("me/tiny", {"config.json": CONFIG, **files})


# -- local folders --


def test_local_folder_hit_str_and_path(tmp_path):
    (tmp_path / "config.json").write_bytes(CONFIG)
    assert resolve_file(str(tmp_path), "config.json") == tmp_path / "config.json"
    assert resolve_file(tmp_path, "config.json") == tmp_path / "config.json"


def test_local_folder_subfolder(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "config.json").write_bytes(CONFIG)
    found = resolve_file(tmp_path, "config.json", subfolder="sub/deeper")
    assert found == tmp_path / "sub" / "deeper" / "config.json"
    assert found.read_bytes() == CONFIG


def test_local_folder_miss(tmp_path):
    message = rf"file 'sub/x.json' not found in local folder '{re.escape(str(tmp_path))}'"
    with pytest.raises(FileNotFoundInRepo, match=message) as info:
        resolve_file(tmp_path, "x.json", subfolder="sub")
    assert isinstance(info.value, FileNotFoundError)
    assert resolve_file(tmp_path, "x.json", required=False) is None


@pytest.mark.parametrize(
    "name", ["./no-such-folder", "/no/such/folder/anywhere", "~/no-such-gpt2dual-dir", "a/b/c"]
)
def test_missing_path_like_folder(name):
    with pytest.raises(LocalFolderNotFound, match=f"local folder '{re.escape(name)}' does not ex"):
        resolve_file(name, "config.json")


def test_missing_pathlike_object_and_file_given(tmp_path):
    with pytest.raises(LocalFolderNotFound, match="does not exist"):
        resolve_file(tmp_path / "absent", "config.json")
    (tmp_path / "config.json").write_bytes(CONFIG)
    with pytest.raises(LocalFolderNotFound, match="is a file, not a folder; pass the folder"):
        resolve_snapshot(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError):  # LocalFolderNotFound is a FileNotFoundError
        resolve_file(tmp_path / "absent", "config.json")


@pytest.mark.parametrize("filename", ["", "../config.json", "/etc/passwd", "a/../../b", "C:/x"])
def test_bad_filename(tmp_path, filename):
    with pytest.raises(ValueError, match="filename must be a relative path inside the folder"):
        resolve_file(tmp_path, filename)


def test_bad_subfolder_and_types(tmp_path):
    with pytest.raises(ValueError, match=r"subfolder must be a relative path .* got '\.\./up'"):
        resolve_file(tmp_path, "config.json", subfolder="../up")
    with pytest.raises(TypeError, match="path_or_repo_id must be a str or os.PathLike, got int"):
        resolve_file(3, "config.json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path_or_repo_id is empty"):
        resolve_file("", "config.json")


# -- Hub repos through the local server --


def test_repo_hit_downloads_into_env_cache(hub):
    commit = _tiny(hub)
    path = resolve_file("me/tiny", "config.json")
    assert path.read_bytes() == CONFIG
    assert path == hub.cache_dir / "models--me--tiny" / "snapshots" / commit / "config.json"
    assert hub.paths_requested() == [
        "/me/tiny/resolve/main/config.json",
        "/me/tiny/resolve/main/config.json",
    ]


def test_cache_dir_env_read_at_call_time(hub, monkeypatch, tmp_path):
    _tiny(hub)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other"))
    assert resolve_file("me/tiny", "config.json").is_relative_to(tmp_path / "other")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_file("me/tiny", "config.json").is_relative_to(tmp_path / "home" / "hub")
    explicit = resolve_file("me/tiny", "config.json", cache_dir=tmp_path / "explicit")
    assert explicit.is_relative_to(tmp_path / "explicit")


def test_second_call_served_from_cache(hub, monkeypatch):
    commit = _tiny(hub)
    first = resolve_file("me/tiny", "config.json")
    served = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_file("me/tiny", "config.json") == first
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_file("me/tiny", "config.json", local_files_only=True) == first
    assert len(hub.requests) == served  # neither call touched the server
    hub.stop()
    assert resolve_file("me/tiny", "config.json", revision=commit).read_bytes() == CONFIG


def test_revision(hub):
    main = _tiny(hub)
    hub.add_repo("me/tiny", {"config.json": b'{"n_layer": 4}'}, revision="v2")
    assert resolve_file("me/tiny", "config.json", revision="v2").read_bytes() == b'{"n_layer": 4}'
    assert resolve_file("me/tiny", "config.json", revision=main).read_bytes() == CONFIG
    assert resolve_file("me/tiny", "config.json").read_bytes() == CONFIG
    with pytest.raises(RevisionNotFound, match="revision 'v9' not found in Hub repo 'me/tiny'"):
        resolve_file("me/tiny", "config.json", revision="v9")


def test_subfolder_and_lfs_redirect(hub):
    weights = bytes(range(256)) * 40
    hub.add_repo("me/tiny", {"ckpt/config.json": CONFIG, "ckpt/model.safetensors": weights})
    assert resolve_file("me/tiny", "config.json", subfolder="ckpt").read_bytes() == CONFIG
    assert resolve_file("me/tiny", "model.safetensors", subfolder="ckpt").read_bytes() == weights
    sha256 = hashlib.sha256(weights).hexdigest()
    assert f"/cdn/{sha256}" in hub.paths_requested("GET")  # followed the Hub-style redirect


def test_missing_file(hub):
    _tiny(hub)
    message = (
        r"gpt2_dual: file 'nope\.json' not found in Hub repo 'me/tiny' \(revision 'main'\); "
        r"check the repo's files or pass a local folder"
    )
    with pytest.raises(FileNotFoundInRepo, match=message):
        resolve_file("me/tiny", "nope.json")
    assert resolve_file("me/tiny", "nope.json", required=False) is None


def test_unknown_repo(hub):
    message = (
        r"gpt2_dual: Hub repo 'me/missing' not found \(or you have no access\); check the id, "
        r"or pass token=\.\.\. for a private repo"
    )
    with pytest.raises(RepoNotFound, match=message):
        resolve_file("me/missing", "config.json")
    with pytest.raises(RepoNotFound, match=message):
        resolve_file("me/missing", "config.json", required=False)


def test_private_and_gated_repos(hub):
    hub.add_repo("me/private", {"config.json": CONFIG}, token="hf_secret")
    hub.add_repo("me/gated", {"config.json": CONFIG}, gated=True)
    with pytest.raises(RepoNotFound, match="'me/private' not found"):
        resolve_file("me/private", "config.json", token=False)
    assert resolve_file("me/private", "config.json", token="hf_secret").read_bytes() == CONFIG
    with pytest.raises(RepoNotFound, match="Hub repo 'me/gated' is gated; accept its conditions"):
        resolve_file("me/gated", "config.json")


def test_offline_empty_cache(hub, monkeypatch):
    _tiny(hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = r"file 'config\.json' of Hub repo 'me/tiny' \(revision 'main'\) " + OFFLINE_MSG
    with pytest.raises(OfflineMiss, match=message):
        resolve_file("me/tiny", "config.json")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(OfflineMiss, match=message):
        resolve_file("me/tiny", "config.json", local_files_only=True)
    with pytest.raises(OfflineMiss, match=message):  # unknown offline: not "absent"
        resolve_file("me/tiny", "config.json", local_files_only=True, required=False)
    assert hub.requests == []


def test_offline_optional_file_is_absent_only_when_the_hub_said_so(hub):
    _tiny(hub)
    resolve_file("me/tiny", "config.json")
    # Never asked online: offline we cannot know whether it exists.
    with pytest.raises(OfflineMiss, match="'added_tokens.json' of Hub repo 'me/tiny'"):
        resolve_file("me/tiny", "added_tokens.json", local_files_only=True, required=False)
    assert resolve_file("me/tiny", "added_tokens.json", required=False) is None  # Hub: 404
    assert (
        resolve_file("me/tiny", "added_tokens.json", local_files_only=True, required=False) is None
    )
    with pytest.raises(OfflineMiss, match="'added_tokens.json' of Hub repo 'me/tiny'"):
        resolve_file("me/tiny", "added_tokens.json", local_files_only=True)


def test_endpoint_that_is_no_hub(hub, monkeypatch):
    _tiny(hub)
    endpoint = f"{hub.url}/not/a-hub"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    message = (
        rf"could not get file 'config\.json' of Hub repo 'me/tiny' \(revision 'main'\) from the "
        rf"Hub at {re.escape(endpoint)} \(.*\) and it is not in the local Hub cache; check your "
        r"connection, proxy and HF_ENDPOINT, or pass a local folder"
    )
    with pytest.raises(OfflineMiss, match=message):
        resolve_file("me/tiny", "config.json")


# -- the bundled GPT-2 vocabulary --


def _tiktoken_pins() -> dict[str, str]:
    """sha256 of OpenAI's vocab.bpe / encoder.json as pinned by tiktoken (independent source)."""
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    source = inspect.getsource(openai_public.gpt2)
    merges = re.search(r'vocab_bpe_hash="([0-9a-f]{64})"', source)
    vocab = re.search(r'encoder_json_hash="([0-9a-f]{64})"', source)
    assert merges and vocab
    return {"merges.txt": merges[1], "vocab.json": vocab[1]}


def test_bundled_vocab_matches_openai_pins():
    folder = bundled_vocab_dir()
    for name, expected in _tiktoken_pins().items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == expected
    for name, expected in BUNDLED_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == expected
    assert "gpt2" in BUNDLED_GPT2_REPOS and "openai-community/gpt2-xl" in BUNDLED_GPT2_REPOS


def test_bundled_verification_fails_on_corruption(tmp_path):
    copy = tmp_path / "gpt2"
    shutil.copytree(bundled_vocab_dir(), copy)
    assert _verify_dir(copy) == copy
    with (copy / "merges.txt").open("ab") as f:
        f.write(b"x")
    with pytest.raises(HubError, match=r"bundled file 'merges.txt' in .* does not match its pinn"):
        _verify_dir(copy)
    (copy / "vocab.json").unlink()
    with pytest.raises(HubError, match=r"bundled file 'merges.txt' in .* does not match"):
        _verify_dir(copy)  # files are checked in name order: merges.txt first
    (copy / "merges.txt").write_bytes((bundled_vocab_dir() / "merges.txt").read_bytes())
    with pytest.raises(HubError, match=r"bundled file 'vocab.json' is missing from .*reinstall"):
        _verify_dir(copy)


@pytest.mark.parametrize("repo_id", ["gpt2", "openai-community/gpt2"])
@pytest.mark.parametrize("how", ["env", "local_files_only", "unreachable"])
def test_bundled_fallback(hf_env, monkeypatch, caplog, repo_id, how):
    monkeypatch.setattr(hub_module, "_announced_bundle", set())
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # "unreachable": hf_env already points HF_ENDPOINT at a closed port
    caplog.set_level(logging.INFO, logger="gpt2_dual.hub.resolve")
    for name in BUNDLED_SHA256:
        found = resolve_file(repo_id, name, local_files_only=how == "local_files_only")
        assert found == bundled_vocab_dir() / name
    assert resolve_file(repo_id, "added_tokens.json", required=False) is None
    notes = [r.getMessage() for r in caplog.records if "bundled GPT-2 vocabulary" in r.getMessage()]
    assert len(notes) == 1 and f"'{repo_id}'" in notes[0]  # logged once


def test_bundled_fallback_limits(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineMiss, match="file 'pytorch_model.bin' of Hub repo 'gpt2'.*not its we"):
        resolve_file("gpt2", "pytorch_model.bin")  # config.json is bundled: test_config_fallback
    with pytest.raises(OfflineMiss, match="file 'model.safetensors' of Hub repo 'gpt2'"):
        resolve_file("gpt2", "model.safetensors", required=False)  # weights are not bundled
    with pytest.raises(OfflineMiss, match=r"\(revision 'v1'\)"):
        resolve_file("gpt2", "vocab.json", revision="v1")  # only the default revision
    with pytest.raises(OfflineMiss, match="file 'sub/vocab.json'"):
        resolve_file("gpt2", "vocab.json", subfolder="sub")
    with pytest.raises(OfflineMiss, match="file 'vocab.json' of Hub repo 'me/gpt2'"):
        resolve_file("me/gpt2", "vocab.json")  # not a bundled repo


def test_bundled_fallback_when_endpoint_is_no_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"{hub.url}/not/a-hub")
    assert resolve_file("gpt2", "merges.txt") == bundled_vocab_dir() / "merges.txt"


def test_cached_hub_file_wins_over_bundle(hub, monkeypatch):
    hub.add_repo("gpt2", {"vocab.json": b'{"!": 0}'})
    online = resolve_file("gpt2", "vocab.json")
    assert online.read_bytes() == b'{"!": 0}'  # online, the Hub's file, not the bundle
    with pytest.raises(FileNotFoundInRepo, match="file 'merges.txt' not found in Hub repo 'gpt2'"):
        resolve_file("gpt2", "merges.txt")  # online, the repo's answer counts
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_file("gpt2", "vocab.json") == online
    hub.stop()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert resolve_file("gpt2", "vocab.json") == online


# -- snapshots --


def _sharded(hub: HubServer) -> str:
    return hub.add_repo(
        "me/big",
        {
            "config.json": CONFIG,
            "README.md": b"# big",
            "model-00001-of-00002.safetensors": b"a" * 300,
            "model-00002-of-00002.safetensors": b"b" * 200,
            "model.safetensors.index.json": b"{}",
            "tf_model.h5": b"h" * 100,
            "ckpt/model.safetensors": b"c" * 50,
        },
    )


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_snapshot_only_matching_files(hub, monkeypatch):
    commit = _sharded(hub)
    folder = resolve_snapshot("me/big", allow_patterns=["config.json", "model*.safetensors*"])
    assert folder == hub.cache_dir / "models--me--big" / "snapshots" / commit
    assert _files(folder) == {
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    }
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == b"b" * 200
    requested = " ".join(hub.paths_requested())
    assert "README.md" not in requested and "tf_model.h5" not in requested
    served = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_snapshot("me/big", allow_patterns=["config.json"]) == folder
    assert len(hub.requests) == served


def test_snapshot_subfolder_and_errors(hub, monkeypatch):
    _sharded(hub)
    folder = resolve_snapshot("me/big", subfolder="ckpt", allow_patterns=["*.safetensors"])
    assert folder.name == "ckpt" and _files(folder) == {"model.safetensors"}
    with pytest.raises(FileNotFoundInRepo, match=r"no files matching \['\*\.gguf'\] in Hub repo"):
        resolve_snapshot("me/big", allow_patterns=["*.gguf"])
    with pytest.raises(RepoNotFound, match="Hub repo 'me/missing' not found"):
        resolve_snapshot("me/missing")
    with pytest.raises(RevisionNotFound, match="revision 'v9' not found in Hub repo 'me/big'"):
        resolve_snapshot("me/big", revision="v9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineMiss, match=r"files matching \['\*\.bin'\] of Hub repo 'me/big'"):
        resolve_snapshot("me/big", allow_patterns=["*.bin"], revision="other")
    with pytest.raises(OfflineMiss, match=r"Hub cache of Hub repo 'me/big' \(revision 'main'\)"):
        resolve_snapshot("me/big", allow_patterns=["tf_model.h5"])  # cached revision lacks it


def test_snapshot_local_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert resolve_snapshot(tmp_path) == tmp_path
    assert resolve_snapshot(str(tmp_path), subfolder="ckpt") == tmp_path / "ckpt"
    with pytest.raises(FileNotFoundInRepo, match="subfolder 'nope' not found in local folder"):
        resolve_snapshot(tmp_path, subfolder="nope")


def test_import_is_light():
    code = "import sys, gpt2_dual.hub.resolve; print('huggingface_hub' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
