"""A Hugging Face Hub-compatible HTTP server for tests: stdlib only, 127.0.0.1, in-memory repos.

It answers what the real ``huggingface_hub`` client asks (``hf_hub_download``,
``snapshot_download``), so code under test goes through the real client and its cache:

* ``HEAD``/``GET {endpoint}/{repo_id}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag``
  (git blob sha1), ``Content-Length``; LFS-like files (``.safetensors``, ``.bin``, ``.h5``,
  ``.msgpack``) answer ``302`` to ``/cdn/{sha256}`` with ``X-Linked-Etag``/``X-Linked-Size``,
  like the Hub's CDN redirect. ``Range: bytes=N-`` is honoured.
* ``GET {endpoint}/api/models/{repo_id}[/revision/{revision}]``: ``{"id", "sha", "siblings"}``.
* ``GET {endpoint}/api/models/{repo_id}/tree/{revision}``: the file list.
* Errors as the Hub sends them: ``401`` + ``X-Error-Code: RepoNotFound`` (unknown repo, or a
  private one without its token), ``403`` + ``GatedRepo``, ``404`` + ``RevisionNotFound``,
  ``404`` + ``EntryNotFound`` (with ``X-Repo-Commit``).

Uploads, as ``HfApi.create_repo``, ``create_branch`` and ``upload_folder``/``create_commit`` of
huggingface_hub 0.36 make them (every write needs ``Authorization: Bearer <any token>``, else
``401``; only repos under ``HubServer.user``, default ``"me"``, are writable, else ``403``):

* ``POST {endpoint}/api/repos/create`` (``{"name", "organization", "private"}``): a new repo
  whose ``main`` holds no file (a private one takes the caller's token); ``409`` with ``url``
  when it exists.
* ``POST {endpoint}/api/models/{repo_id}/branch/{branch}``: a branch at ``main``'s head;
  ``409`` when it exists.
* ``POST {endpoint}/api/models/{repo_id}/preupload/{revision}``: every file is ``"regular"``
  (so no LFS or Xet upload is ever made) with the ``oid`` of the file already at that path.
* ``POST {endpoint}/api/models/{repo_id}/commit/{revision}`` (ndjson: ``header``, ``file`` with
  base64 content, ``deletedFile``, ``deletedFolder``; ``?create_pr=1`` commits to a new
  ``refs/pr/N``): a new commit on the revision; each one is recorded in ``HubServer.commits``.

Usage:

    # 1. pytest fixtures "hf_env" and "hub": import their functions into the test module
    #    (under other names, so test arguments named hub/hf_env do not shadow the imports).
    from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

    def test_config_from_hub(hub):           # hub: a started HubServer
        hub.add_repo("me/tiny", {"config.json": b'{"n_layer": 2}'})
        config = GPT2Config.from_pretrained("me/tiny")   # goes through the server

    # 2. a context manager, for code that sets the environment itself.
    with serve({"me/tiny": {"config.json": b"{}"}}) as endpoint:
        ...  # pass endpoint as HF_ENDPOINT

``hf_env`` (used by ``hub``) isolates the Hub settings for one test with ``monkeypatch``:
``HF_HOME`` = ``tmp_path/hf_home``, ``HF_HUB_CACHE`` = ``tmp_path/hf_home/hub`` (so a real cache
is never touched), ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``/``HUGGINGFACE_HUB_CACHE``/
``HF_TOKEN`` unset, and ``HF_ENDPOINT`` at a closed local port (nothing can reach the real Hub).
``hub`` then points ``HF_ENDPOINT`` at its server, and stops the server at teardown. The fixture
returns the Path of the Hub cache; ``hub.cache_dir`` is the same folder.

The server is bounded: it binds 127.0.0.1 on a free port, serves each connection on a daemon
thread with a 10 s socket timeout, keeps no state outside the object, and ``stop()`` (or leaving
the ``with`` block / the fixture) shuts it down and joins its thread.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack")

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_RESOLVE_RE = re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_INFO_RE = re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?")
_TREE_RE = re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?")
_CDN_RE = re.compile(r"/cdn/(?P<sha256>[0-9a-f]{64})")
_CREATE_PATH = "/api/repos/create"
_WRITE_RE = re.compile(rf"/api/models/{_REPO}/(?P<op>preupload|commit|branch)/(?P<rev>[^/]+)")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` (what the Hub sends as ETag for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def closed_port() -> int:
    """A local TCP port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class _Revision:
    commit: str
    files: dict[str, bytes]


@dataclasses.dataclass
class _Repo:
    revisions: dict[str, _Revision] = dataclasses.field(default_factory=dict)
    token: str | None = None
    gated: bool = False


@dataclasses.dataclass(frozen=True)
class Commit:
    """One commit received by the server (``HubServer.commits``).

    Attributes:
        repo_id: the repo.
        revision: the branch (or ``refs/pr/N``) it landed on.
        summary: the commit message.
        description: the commit description.
        paths: the files it added or replaced, sorted.
        commit: its 40-hex id.
    """

    repo_id: str
    revision: str
    summary: str
    description: str
    paths: tuple[str, ...]
    commit: str


class HubServer:
    """An in-memory Hub on 127.0.0.1; use as a context manager or call start()/stop().

    Attributes:
        requests: ``(method, path)`` of every request served, in order.
        cache_dir: the Hub cache folder of the test (set by the ``hub`` fixture), else None.
    """

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str]] = []
        self.cache_dir: Path | None = None
        self.user = "me"
        self.commits: list[Commit] = []

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        revision: str = "main",
        commit: str | None = None,
        token: str | None = None,
        gated: bool = False,
    ) -> str:
        """Add (or replace) one revision of a repo.

        Args:
            repo_id: ``name`` or ``owner/name``.
            files: path in the repo -> content.
            revision: branch or tag name holding these files.
            commit: its 40-hex commit id (default: derived from the content).
            token: if set, the repo is private: requests need ``Authorization: Bearer <token>``.
            gated: answer every request for the repo with the Hub's gated-repo error.

        Returns:
            The commit id.
        """
        if commit is None:
            digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
            for name in sorted(files):
                digest.update(name.encode() + b"\0" + files[name])
            commit = digest.hexdigest()
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"commit must be 40 hex digits, got {commit!r}")
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            repo.revisions[revision] = _Revision(commit, dict(files))
            repo.token, repo.gated = token, gated
            for data in files.values():
                self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo's revision (a copy); ``KeyError`` if there is none."""
        repo, rev = self._find(repo_id, revision)
        if rev is None:
            raise KeyError(f"no revision {revision!r} of {repo_id!r}")
        return dict(rev.files)

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:54321`` (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving on a free port of 127.0.0.1; returns the endpoint URL."""
        if self._httpd is None:
            self._httpd = _Server(("127.0.0.1", 0), _Handler)
            self._httpd.hub = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
            # The resolver remembers a failed TCP probe of an endpoint for 30 s; an earlier
            # test's closed port may be this server's port now, so forget that answer.
            from gpt2_dual.hub import paths as _hub_paths

            _hub_paths._probes.pop(self.url, None)
        return self.url

    def stop(self) -> None:
        """Stop serving and close the port (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd, self._thread = None, None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths_requested(self, method: str | None = None) -> list[str]:
        """Paths of the requests served so far (only ``method`` ones if given)."""
        with self._lock:
            return [p for m, p in self.requests if method is None or m == method]

    # -- request handling (called from the server's threads) --

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _find(self, repo_id: str, revision: str) -> tuple[_Repo | None, _Revision | None]:
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return None, None
            if revision in repo.revisions:
                return repo, repo.revisions[revision]
            for rev in repo.revisions.values():
                if rev.commit == revision:
                    return repo, rev
            return repo, None

    def _blob(self, sha256: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(sha256)

    def _commit(
        self, repo_id: str, revision: str, lines: list[dict], create_pr: bool
    ) -> tuple[str, str]:
        """Apply one ndjson commit payload; returns ``(revision, commit id)``."""
        header = next(line["value"] for line in lines if line["key"] == "header")
        with self._lock:
            repo = self._repos[repo_id]
            files = dict(repo.revisions[revision].files)
            added = []
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    added.append(value["path"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                elif key != "header":
                    raise ValueError(f"unsupported commit operation {key!r}")
            if create_pr:
                number = 1 + sum(name.startswith("refs/pr/") for name in repo.revisions)
                revision = f"refs/pr/{number}"
            parent = repo.revisions.get(revision)
            digest = hashlib.sha1((parent.commit if parent else "").encode())
            digest.update(json.dumps(header, sort_keys=True).encode())
            for name in sorted(files):
                digest.update(name.encode() + b"\0" + files[name])
            commit = digest.hexdigest()
            repo.revisions[revision] = _Revision(commit, files)
            for data in files.values():
                self._blobs[hashlib.sha256(data).hexdigest()] = data
            self.commits.append(
                Commit(
                    repo_id,
                    revision,
                    header.get("summary", ""),
                    header.get("description", ""),
                    tuple(sorted(added)),
                    commit,
                )
            )
        return revision, commit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a connection may stay idle
    error_content_type = "text/plain"

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr log; requests are recorded on the HubServer."""

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_POST(self) -> None:
        hub = self.server.hub
        parts = urlsplit(self.path)
        hub._record("POST", parts.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return self._json(401, {"error": "Invalid username or password."})
        if parts.path == _CREATE_PATH:
            return self._create_repo(json.loads(body), token)
        m = _WRITE_RE.fullmatch(parts.path)
        if m is None:
            return self._send(404, head=False)
        repo_id, revision = unquote(m["repo"]), unquote(m["rev"])
        repo, rev = hub._find(repo_id, revision if m["op"] != "branch" else "main")
        if self._check(repo, rev, revision, head=False):
            return None
        if not repo_id.startswith(f"{hub.user}/"):
            return self._json(403, {"error": f"You don't have the rights to write to {repo_id}"})
        assert repo is not None and rev is not None
        if m["op"] == "branch":
            if revision in repo.revisions:
                return self._json(409, {"error": f"Reference {revision} already exists"})
            with hub._lock:
                repo.revisions[revision] = _Revision(rev.commit, dict(rev.files))
            return self._json(200, {})
        if m["op"] == "preupload":
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(rev.files[f["path"]]) if f["path"] in rev.files else None,
                }
                for f in json.loads(body)["files"]
            ]
            return self._json(200, {"files": files, "commitOid": rev.commit})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        create_pr = "create_pr=1" in parts.query
        landed, commit = hub._commit(repo_id, revision, lines, create_pr)
        answer = {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit}
        answer["pullRequestUrl"] = (
            f"{hub.url}/{repo_id}/discussions/{landed.rsplit('/', 1)[1]}" if create_pr else None
        )
        return self._json(200, answer)

    def _create_repo(self, request: dict, token: str) -> None:
        hub = self.server.hub
        owner = request.get("organization") or hub.user
        repo_id = f"{owner}/{request['name']}"
        url = f"{hub.url}/{repo_id}"
        if owner != hub.user:
            return self._json(403, {"error": f"You don't have the rights to create under {owner}"})
        with hub._lock:
            if repo_id in hub._repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            commit = hashlib.sha1(f"{repo_id}@init".encode()).hexdigest()
            private = bool(request.get("private"))
            hub._repos[repo_id] = _Repo({"main": _Revision(commit, {})}, token if private else None)
        return self._json(200, {"url": url, "name": repo_id})

    def _json(self, status: int, data: dict) -> None:
        headers = {"Content-Type": "application/json"}
        self._send(status, headers, json.dumps(data).encode(), head=False)

    def _handle(self, head: bool) -> None:
        hub = self.server.hub
        path = urlsplit(self.path).path
        hub._record(self.command, path)
        if m := _CDN_RE.fullmatch(path):
            data = hub._blob(m["sha256"])
            if data is None:
                return self._send(404, head=head)
            return self._send_bytes(data, {}, head)
        if m := _RESOLVE_RE.fullmatch(path):
            return self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]), head)
        if m := _TREE_RE.fullmatch(path):
            return self._api(unquote(m["repo"]), unquote(m["rev"]), head, tree=True)
        if m := _INFO_RE.fullmatch(path):
            return self._api(unquote(m["repo"]), unquote(m["rev"] or "main"), head, tree=False)
        self._send(404, head=head)

    def _check(self, repo: _Repo | None, rev: _Revision | None, revision: str, head: bool) -> bool:
        """Send the Hub's error for a missing, private or gated repo or revision; True if sent."""
        auth = self.headers.get("Authorization", "")
        if repo is None or (repo.token is not None and auth != f"Bearer {repo.token}"):
            self._send(
                401,
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                head=head,
            )
        elif repo.gated:
            self._send(
                403,
                {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"},
                head=head,
            )
        elif rev is None:
            self._send(
                404,
                {
                    "X-Error-Code": "RevisionNotFound",
                    "X-Error-Message": f"Invalid rev id: {revision}",
                },
                head=head,
            )
        else:
            return False
        return True

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo, rev = self.server.hub._find(repo_id, revision)
        if self._check(repo, rev, revision, head):
            return
        assert rev is not None
        data = rev.files.get(filename)
        headers = {"X-Repo-Commit": rev.commit}
        if data is None:
            headers.update({"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
            return self._send(404, headers, head=head)
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            host, port = self.server.server_address[:2]
            headers.update(
                {
                    "Location": f"http://{host}:{port}/cdn/{sha256}",
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_blob_sha1(data)}"',
                }
            )
            return self._send(302, headers, head=head)
        headers["ETag"] = f'"{git_blob_sha1(data)}"'
        self._send_bytes(data, headers, head)

    def _api(self, repo_id: str, revision: str, head: bool, *, tree: bool) -> None:
        repo, rev = self.server.hub._find(repo_id, revision)
        if self._check(repo, rev, revision, head):
            return
        assert repo is not None and rev is not None
        if tree:
            listing = [_tree_entry(name, data) for name, data in sorted(rev.files.items())]
            body = json.dumps(listing).encode()
        else:
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": rev.commit,
                "private": repo.token is not None,
                "siblings": [{"rfilename": name} for name in sorted(rev.files)],
            }
            body = json.dumps(info).encode()
        self._send(200, {"Content-Type": "application/json"}, body, head=head)

    def _send_bytes(self, data: bytes, headers: dict[str, str], head: bool) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and int(match[1]) <= len(data):
            start = int(match[1])
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return self._send(206, headers, data[start:], head=head)
        self._send(200, {"Content-Type": "application/octet-stream", **headers}, data, head=head)

    def _send(
        self, status: int, headers: dict[str, str] | None = None, body: bytes = b"", *, head: bool
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "file",
        "path": name,
        "size": len(data),
        "oid": git_blob_sha1(data),
    }
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {
            "oid": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": 134,
        }
    return entry


@contextmanager
def serve(repos: Mapping[str, Mapping[str, bytes]], *, commit: str | None = None) -> Iterator[str]:
    """Serve ``repos`` (repo id -> {path: bytes}, revision "main") and yield the endpoint URL.

    Args:
        repos: the repos to serve.
        commit: commit id of every repo's "main" (default: derived from each repo's content).
    """
    with HubServer() as server:
        for repo_id, files in repos.items():
            server.add_repo(repo_id, files, commit=commit)
        yield server.url


@pytest.fixture(name="hf_env")
def hf_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Isolated, online Hub settings for one test (see the module docstring); returns the cache."""
    home = tmp_path / "hf_home"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return cache


@pytest.fixture(name="hub")
def hub_fixture(hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A started ``HubServer`` with ``HF_ENDPOINT`` pointing at it (stopped at teardown).

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import (``constants.HF_HUB_OFFLINE``; its
    HTTP sessions, made per thread, then refuse every request), and transformers copies it at
    its own import: with ``HF_HUB_OFFLINE=1`` exported, both copies are set online for the
    test and restored after, with the sessions dropped each time so none outlives its mode.
    """
    with _online_hub_client(), HubServer() as server:
        server.cache_dir = hf_env
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@contextmanager
def _online_hub_client() -> Iterator[None]:
    import sys

    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    flags = [(constants, "HF_HUB_OFFLINE")]
    if "transformers.utils.hub" in sys.modules:
        flags.append((sys.modules["transformers.utils.hub"], "_is_offline_mode"))
    saved = [(owner, name, getattr(owner, name)) for owner, name in flags]
    if not any(value for _, _, value in saved):
        yield
        return
    for owner, name, _ in saved:
        setattr(owner, name, False)
    reset_sessions()
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        reset_sessions()
