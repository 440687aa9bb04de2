"""Shared fixtures. Everything runs offline on CPU; models are the tiny ones from hf_cai.tiny."""

from __future__ import annotations

import importlib.util
import os
import socket

# Offline by default; the publish tests lift it (huggingface_hub.constants.HF_HUB_OFFLINE) for the loopback server only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Idle OpenMP threads otherwise spin for their next task and starve the subprocesses some tests start (kill and
# resume, two-process training) on a 2-core machine. Set before torch is imported, and inherited by subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The Space's tests need the `space` extra (gradio), which the lowest-versions run (`make test-min`) does not install.
collect_ignore_glob = [] if importlib.util.find_spec("gradio") else ["test_space_*.py"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "min_versions: also run against the lowest supported library versions (`make test-min`)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# huggingface_hub reads HF_ENDPOINT when it is imported: point it at the loopback Hub server that the publish tests
# start on this port, before any test module imports transformers or huggingface_hub.
HUB_PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures folder is missing: expected {SHARED_FIXTURES} beside the checkout")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama chat model + tokenizer saved on disk (built once per test session)."""
    from hf_cai.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_gguf_file(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny chat model as a Q4_1 GGUF file (see tests/scripts/tiny_gguf.py)."""
    from scripts.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-chat.Q4_1.gguf", tiny_model_dir)


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of its own for the GGUF files a test converts (``HF_CAI_CACHE``), inherited by subprocesses."""
    cache = tmp_path / "hf_cai-cache"
    monkeypatch.setenv("HF_CAI_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama sequence-classification model + tokenizer saved on disk."""
    from hf_cai.tiny import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-reward"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from more threads, and spinning threads crawl when other processes share the cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def exact_float32():
    """Models load and compute in float32 for the module (``HF_CAI_DTYPE``, inherited by subprocesses): tests that
    compare two computations exactly (a resumed run with an uninterrupted one, a served model with a reference) would
    otherwise depend on bfloat16 rounding, which changes with thread counts and batch shapes."""
    previous = os.environ.get("HF_CAI_DTYPE")
    os.environ["HF_CAI_DTYPE"] = "float32"
    yield
    if previous is None:
        del os.environ["HF_CAI_DTYPE"]
    else:
        os.environ["HF_CAI_DTYPE"] = previous
