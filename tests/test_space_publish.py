"""Publishing the chat Space to the loopback Hub server with the real huggingface_hub client, then running the app
from a download of the Space repository."""

from __future__ import annotations

import importlib.util
import shutil
from importlib import metadata, resources
from pathlib import Path

import pytest
from conftest import HUB_PORT
from hub_server import HubServer, use_loopback_hub
from test_space_app import build_tiny_adapter

import hf_cai
from hf_cai.constitution import Constitution
from hf_cai.hub.errors import PublishError

WRITE = "hf_" + "s" * 34
READ = "hf_" + "t" * 34
BASE_ID = "hf-cai/tiny-chat"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch, HubServer(HUB_PORT) as server:
        use_loopback_hub(patch, tmp_path_factory.mktemp("hf-home"))
        server.add_token(WRITE, "alice", orgs=("hf-cai",))
        server.add_token(READ, "alice", role="read")
        yield server


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory, hub) -> Path:
    """A tiny CAI adapter as a trainer leaves it (adapter, tokenizer, constitution); its base is on the loopback Hub."""
    from huggingface_hub import HfApi

    folder = build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("trained"))
    for name in TOKENIZER_FILES:
        if (tiny_model_dir / name).is_file():
            shutil.copy(tiny_model_dir / name, folder / name)
    api = HfApi(token=WRITE)
    api.create_repo(BASE_ID, exist_ok=True)
    api.upload_folder(folder_path=str(tiny_model_dir), repo_id=BASE_ID, commit_message="tiny base")
    return folder


def _load_downloaded_app(folder: Path):
    spec = importlib.util.spec_from_file_location("downloaded_space_app", folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_with_space_creates_a_space_that_runs_from_its_download(hub, trained, tmp_path):
    from huggingface_hub import HfApi, SpaceCard, hf_hub_download, snapshot_download

    from hf_cai.hub.publish import publish
    from hf_cai.spaces.config import load_space_config
    from hf_cai.spaces.models import SideBySideModels

    result = publish(trained, "alice/cai-tiny", token=WRITE, base_model_id=BASE_ID, license="apache-2.0", space=True)
    space_id = "alice/cai-tiny-chat"
    assert result.space_url and result.space_url.endswith(space_id)
    assert hub.commit_count(space_id, repo_type="space") == 2  # the repo's initial commit + the Space in one commit

    files = set(HfApi(token=WRITE).list_repo_files(space_id, repo_type="space"))
    assert {"app.py", "requirements.txt", "README.md", "space_config.json", "constitution.yaml"} <= files
    app_source = hub.file(space_id, "app.py", repo_type="space").decode()
    assert app_source == (resources.files("hf_cai.spaces") / "app.py").read_text(encoding="utf-8")

    card = SpaceCard.load(hf_hub_download(space_id, "README.md", repo_type="space", cache_dir=tmp_path / "cache"))
    assert card.data.sdk == "gradio" and card.data.sdk_version == metadata.version("gradio")
    assert card.data.app_file == "app.py"
    assert card.data.models == [BASE_ID, "alice/cai-tiny"]
    assert card.data.license == "apache-2.0" and "constitutional-ai" in card.data.tags
    assert 0 < len(card.data.short_description) <= 60
    assert card.data.title and card.data.emoji and card.data.colorFrom and card.data.colorTo
    assert "LoRA adapter" in card.text  # read from the published model's adapter_config.json

    requirements = hub.file(space_id, "requirements.txt", repo_type="space").decode().splitlines()
    assert f"hf-cai=={hf_cai.__version__}" in requirements
    torch_version = metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in requirements and f"gradio=={metadata.version('gradio')}" in requirements
    assert not any("+" in line for line in requirements if not line.startswith("#"))

    constitution = Constitution.from_hub(space_id, repo_type="space")
    assert constitution.sha256 == Constitution.load(trained / "constitution.yaml").sha256
    assert constitution.sha256 in card.text
    for path in files:
        assert WRITE.encode() not in hub.file(space_id, path, repo_type="space")

    # Run the Space as the Hub would: its own app.py and config, models downloaded from the (loopback) Hub.
    folder = Path(snapshot_download(space_id, repo_type="space", cache_dir=tmp_path / "space"))
    config = load_space_config(folder / "space_config.json")
    assert (config.base_model, config.cai_model) == (BASE_ID, "alice/cai-tiny")
    models = SideBySideModels.from_config(config)
    assert models.load_error is None and models.shares_base
    app = _load_downloaded_app(folder)
    demo = app.create_app(config, models=models)
    assert demo.fns and {fn.api_name for fn in demo.fns.values()} >= {"chat", "critique", "retry", "clear"}
    conversation = [{"role": "user", "content": "Hello"}]
    replies = list(models.stream({"base": conversation, "cai": conversation}, max_new_tokens=6, temperature=0.0))[-1]
    assert replies["base"] != replies["cai"]


def test_hf_cai_space_create_writes_and_pushes(hub, trained, tmp_path, capsys):
    from huggingface_hub import SpaceCard

    from hf_cai.cli import main

    output = tmp_path / "space"
    status = main([
        "space", "create", "alice/tiny-demo", "--base", BASE_ID, "--model", "alice/cai-tiny", "--constitution",
        "harmless", "--hardware", "zero-a10g", "--short-description", "Tiny CAI demo", "--token", WRITE,
        "--output-dir", str(output),
    ])
    assert status == 0 and "alice/tiny-demo" in capsys.readouterr().out
    card = SpaceCard.load(output / "README.md")
    assert card.data.suggested_hardware == "zero-a10g" and card.data.short_description == "Tiny CAI demo"
    assert hub.file("alice/tiny-demo", "README.md", repo_type="space") == (output / "README.md").read_bytes()


def test_bad_space_requests_fail_clearly(hub, trained, tiny_model_dir, tmp_path, capsys):
    from hf_cai.cli import main
    from hf_cai.hub.space import create_space, write_space_folder

    common = {"space_repo_id": "alice/x-chat", "cai_model": "alice/cai-tiny", "constitution": "harmless"}
    with pytest.raises(ValueError, match="local path"):
        write_space_folder(tmp_path / "a", base_model=str(tiny_model_dir), **common)
    with pytest.raises(ValueError, match="61 characters"):
        write_space_folder(tmp_path / "b", base_model=BASE_ID, short_description="x" * 61, **common)
    with pytest.raises(ValueError, match="not a Space colour"):
        write_space_folder(tmp_path / "c", base_model=BASE_ID, color_from="teal", **common)
    with pytest.raises(ValueError, match="hardware 'gpu-huge' is unknown"):
        write_space_folder(tmp_path / "d", base_model=BASE_ID, hardware="gpu-huge", **common)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        create_space("alice/x-chat", base_model=BASE_ID, cai_model="alice/cai-tiny", constitution="harmless")
    with pytest.raises(PublishError, match="403") as refused:
        create_space(
            "alice/x-chat", base_model=BASE_ID, cai_model="alice/cai-tiny", constitution="harmless", token=READ
        )
    assert READ not in str(refused.value)
    assert main(["space", "create", "alice/x-chat", "--base", BASE_ID, "--model", "alice/cai-tiny",
                 "--constitution", "harmless", "--token", READ]) == 2
    assert READ not in capsys.readouterr().err
