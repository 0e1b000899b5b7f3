"""Shared pieces of the HTTP tests: a tiny LM folder with the real GPT-2 vocabulary, uvicorn
serving ``create_app`` on 127.0.0.1 in a background thread, and the numpy references.

Import the fixtures into a test module under their function names (test arguments use the
fixture names, ``folder``, ``server``, ``reference``, so they do not shadow the imports):

    from http_fixtures import folder_fixture, reference_fixture, server_fixture  # noqa: F401
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402

from gpt2_dual import GPT2Config, GPT2TokenizerFast  # noqa: E402
from gpt2_dual.serve import Engine  # noqa: E402
from gpt2_dual.serve.app import create_app  # noqa: E402

API_KEY = "sk-test-0123456789"
MODEL = "tiny-gpt2"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BODY = 1 << 16
#: Long enough that a request of ~500 tokens is still running when its client leaves.
N_POSITIONS = 512
STARTUP_SECONDS = 30.0


def save_tiny_lm(path) -> str:
    """A random 3-layer GPT2LMHeadModel (wide init, so greedy tokens vary) and the bundled
    GPT-2 tokenizer, saved as transformers saves them."""
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_positions=N_POSITIONS, n_embd=48, n_layer=3, n_head=4, initializer_range=0.3
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(path)
    return str(path)


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, app, engine) -> None:
        self.engine = engine
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start within {STARTUP_SECONDS} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STARTUP_SECONDS)
        self.sock.close()


@contextmanager
def serving(
    folder: str, *, start_engine: bool = True, max_body_bytes: int = MAX_BODY, **engine_kwargs
) -> Iterator[LiveServer]:
    """An engine on ``folder`` behind the app (API key ``API_KEY``, names ``MODEL``, "alias")."""
    engine = Engine.from_pretrained(folder, **{"max_num_seqs": 4, **engine_kwargs})
    if start_engine:
        engine.start()
    app = create_app(
        engine, served_model_names=[MODEL, "alias"], api_key=API_KEY, max_body_bytes=max_body_bytes
    )
    live = LiveServer(app, engine)
    live.start()
    try:
        yield live
    finally:
        live.stop()
        engine.stop()


def wait_until(condition, seconds: float = 20.0) -> bool:
    """Poll ``condition()`` every 10 ms for at most ``seconds``; its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Reference:
    """The same checkpoint loaded apart from the server: ``generate`` and forward logits."""

    def __init__(self, folder: str) -> None:
        from gpt2_dual.pt import GPT2LMHeadModel

        self.model = GPT2LMHeadModel.from_pretrained(folder).eval()
        self.tokenizer = GPT2TokenizerFast.from_pretrained(folder)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """``n`` greedy tokens after ``ids`` (no early stop)."""
        out = self.model.generate(
            torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False
        )
        return out[0, len(ids) :].tolist()

    def log_softmax(self, ids: list[int]) -> np.ndarray:
        """``(T, V)``: numpy float64 log-softmax of the forward logits of ``ids``."""
        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0].double().numpy()
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module", name="folder")
def folder_fixture(tmp_path_factory) -> str:
    return save_tiny_lm(tmp_path_factory.mktemp("serve_http"))


@pytest.fixture(scope="module", name="server")
def server_fixture(folder) -> Iterator[LiveServer]:
    with serving(folder) as live:
        yield live


@pytest.fixture(scope="module", name="reference")
def reference_fixture(folder) -> Reference:
    return Reference(folder)
