"""Publishing the chat Space to the loopback Hub server with the real huggingface_hub client, then installing a
download of the Space into a fresh virtual environment from its own requirements and serving it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import time
import urllib.request
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest
from conftest import HUB_PORT
from hub_server import HubServer, use_loopback_hub
from test_space_app import build_tiny_adapter, free_port, reply

from hf_cai.constitution import Constitution
from hf_cai.hub.errors import PublishError
from hf_cai.hub.space import SPACE_FILES

WRITE = "hf_" + "s" * 34
READ = "hf_" + "t" * 34
BASE_ID = "hf-cai/tiny-chat"
CAI_ID = "alice/cai-tiny"
SPACE_ID = "alice/cai-tiny-chat"
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


@pytest.fixture(scope="module")
def published(hub, trained):
    from hf_cai.hub import publish

    return publish(trained, CAI_ID, token=WRITE, base_model_id=BASE_ID, license="apache-2.0", space=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_with_space_pushes_exactly_the_space_files(hub, published, trained, tmp_path):
    from huggingface_hub import HfApi, SpaceCard, hf_hub_download

    assert published.space_url and published.space_url.endswith(SPACE_ID)
    assert hub.commit_count(SPACE_ID, repo_type="space") == 2  # the repo's initial commit + the Space in one commit

    files = set(HfApi(token=WRITE).list_repo_files(SPACE_ID, repo_type="space"))
    (wheel,) = [name for name in files if name.endswith(".whl")]
    assert files == {".gitattributes", *SPACE_FILES, wheel}
    assert wheel == f"hf_cai-{metadata.version('hf-cai')}-py3-none-any.whl"
    app_source = hub.file(SPACE_ID, "app.py", repo_type="space").decode()
    assert app_source == (resources.files("hf_cai.spaces") / "app.py").read_text(encoding="utf-8")

    card = SpaceCard.load(hf_hub_download(SPACE_ID, "README.md", repo_type="space", cache_dir=tmp_path / "cache"))
    assert card.data.sdk == "gradio" and card.data.sdk_version == metadata.version("gradio")
    assert card.data.app_file == "app.py"
    assert card.data.models == [BASE_ID, CAI_ID]
    assert card.data.license == "apache-2.0" and "constitutional-ai" in card.data.tags
    assert 0 < len(card.data.short_description) <= 60
    assert card.data.title and card.data.emoji and card.data.colorFrom and card.data.colorTo
    assert "LoRA adapter" in card.text  # read from the published model's adapter_config.json

    requirements = hub.file(SPACE_ID, "requirements.txt", repo_type="space").decode().splitlines()
    digest = hashlib.sha256(hub.file(SPACE_ID, wheel, repo_type="space")).hexdigest()
    assert f"hf-cai @ {hub.endpoint}/spaces/{SPACE_ID}/resolve/main/{wheel}#sha256={digest}" in requirements
    torch_version = metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in requirements and f"gradio=={metadata.version('gradio')}" in requirements
    assert not any("+" in line for line in requirements if not line.startswith("#"))

    constitution = Constitution.from_hub(SPACE_ID, repo_type="space")
    assert constitution.sha256 == Constitution.load(trained / "constitution.yaml").sha256
    assert constitution.sha256 in card.text
    for path in files:
        assert WRITE.encode() not in hub.file(SPACE_ID, path, repo_type="space")


def _venv_seeing_these_packages(venv: Path, env: dict[str, str]) -> Path:
    """A fresh virtual environment that sees the packages installed for this test run; returns its python.

    ``--system-site-packages`` would give it the base interpreter's packages, which inside a virtual or conda
    environment are not the ones installed for the tests. Instead a ``.pth`` file lists the site directories of the
    running interpreter as plain paths, so their own ``.pth`` files (an editable hf_cai among them) are not run.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    seen = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (Path(purelib) / "test-run-packages.pth").write_text("".join(f"{path}\n" for path in seen if os.path.isdir(path)))
    return python


@pytest.mark.slow
def test_downloaded_space_installs_into_a_fresh_venv_and_serves(hub, published, tmp_path):
    """What a Space build does: pip installs requirements.txt (nothing but the Space's own hf_cai wheel is fetched,
    from the loopback Hub; the rest comes from this environment), then `python app.py` serves the two models."""
    from gradio_client import Client
    from huggingface_hub import snapshot_download

    # Nothing may lead the fresh environment to this checkout's hf_cai.
    clean = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    clone = tmp_path / "clone"
    shutil.copytree(snapshot_download(SPACE_ID, repo_type="space", cache_dir=tmp_path / "download"), clone)
    (wheel,) = clone.glob("hf_cai-*.whl")
    python = str(_venv_seeing_these_packages(tmp_path / "venv", clean))
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "-r", "requirements.txt"]
    installed = subprocess.run(install, cwd=clone, env=clean, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Successfully installed hf-cai" in installed.stdout

    def run(code: str, *args: str) -> str:
        done = subprocess.run(
            [python, "-c", code, *args], cwd=clone, env=clean, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    site_packages = run("import sysconfig; print(sysconfig.get_paths()['purelib'])")
    assert Path(run("import hf_cai; print(hf_cai.__file__)")).is_relative_to(site_packages)
    # Installed from a wheel, hf_cai packs itself again from what it installed: the same files as the shipped wheel.
    repacked = Path(
        run("import sys; from hf_cai.hub.wheel import build_hf_cai_wheel as b; print(b(sys.argv[1]))", "out")
    )
    with zipfile.ZipFile(wheel) as shipped, zipfile.ZipFile(clone / repacked) as again:
        assert set(shipped.namelist()) == set(again.namelist())
        for name in shipped.namelist():
            if name.endswith("RECORD"):
                assert set(shipped.read(name).splitlines()) == set(again.read(name).splitlines())
            else:
                assert shipped.read(name) == again.read(name), name

    port = free_port()
    environment = {
        **clean,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(tmp_path / "space-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
    }
    log = tmp_path / "app.log"
    with open(log, "wb") as output:
        app = subprocess.Popen([python, "app.py"], cwd=clone, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 300
        while True:
            assert app.poll() is None, f"the Space exited with {app.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the Space did not start:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=5) as page:
                    if page.status == 200:
                        break
            except OSError:
                time.sleep(1)
        # The panels name the models by their Hub ids and link their Hub pages.
        with urllib.request.urlopen(url + "config", timeout=10) as response:
            props = {c["props"].get("elem_id"): c["props"] for c in json.load(response)["components"]}
        assert props["base-chat"]["label"] == "tiny-chat"
        assert props["cai-chat"]["label"] == "tiny-chat + CAI (harmless v1.0)"
        assert f"https://huggingface.co/{CAI_ID}#evaluation" in props["cai-about"]["value"]
        base_history, cai_history, notice, _ = Client(url, verbose=False).predict("Hello", 6, 0.0, api_name="/chat")
        assert notice == "" and reply(base_history) and reply(cai_history)
        assert reply(base_history) != reply(cai_history)  # the adapter, from the loopback Hub, changes the reply
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


def test_space_create_pushes_only_the_space_files_of_its_output_dir(hub, published, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi, SpaceCard

    from hf_cai.cli import main

    output = tmp_path / "space"
    output.mkdir()
    (output / ".env").write_text(f"HF_TOKEN={WRITE}\n")
    (output / "notes.txt").write_text("draft notes that are not part of the Space\n")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    command = [
        "space",
        "create",
        "alice/tiny-demo",
        "--base",
        BASE_ID,
        "--model",
        CAI_ID,
        "--constitution",
        "harmless",
        "--hardware",
        "zero-a10g",
        "--short-description",
        "Tiny CAI demo",
        "--output-dir",
        str(output),
    ]
    assert main(command) == 0 and "pushed alice/tiny-demo" in capsys.readouterr().out
    card = SpaceCard.load(output / "README.md")
    assert card.data.suggested_hardware == "zero-a10g" and card.data.short_description == "Tiny CAI demo"
    assert hub.file("alice/tiny-demo", "README.md", repo_type="space") == (output / "README.md").read_bytes()
    pushed = set(HfApi().list_repo_files("alice/tiny-demo", repo_type="space"))
    assert ".env" not in pushed and "notes.txt" not in pushed
    assert pushed == {".gitattributes", *SPACE_FILES, *(p.name for p in output.glob("hf_cai-*.whl"))}
    # The same Space again: the wheel builds to the same bytes, so nothing changed and no commit is made.
    commits = hub.commit_count("alice/tiny-demo", repo_type="space")
    assert main(command) == 0 and "already up to date" in capsys.readouterr().out
    assert hub.commit_count("alice/tiny-demo", repo_type="space") == commits


def test_a_token_is_never_taken_from_the_command_line(hub, published, capsys):
    from hf_cai.cli import main

    commands = (
        ["space", "create", "alice/x-chat", "--base", BASE_ID, "--model", CAI_ID, "--token", WRITE],
        ["space", "create", "alice/x-chat", "--base", BASE_ID, "--model", CAI_ID, f"--token={WRITE}"],
        ["hub", "list", "--token", WRITE],
        ["hub", "compare", CAI_ID, "harmless", "--token", WRITE],
    )
    for command in commands:
        assert main(command) == 2
        captured = capsys.readouterr()
        assert "--token: tokens are not taken on the command line" in captured.err and "HF_TOKEN" in captured.err
        assert WRITE not in captured.out + captured.err
    assert ("space", "alice/x-chat") not in hub.repos


def test_bad_space_requests_fail_clearly(hub, published, trained, tiny_model_dir, tmp_path, capsys, monkeypatch):
    from hf_cai.cli import main
    from hf_cai.hub import publish
    from hf_cai.hub.space import create_space, write_space_folder

    common = {"space_repo_id": "alice/x-chat", "cai_model": CAI_ID, "constitution": "harmless"}
    with pytest.raises(ValueError, match="local path"):
        write_space_folder(tmp_path / "a", base_model=str(tiny_model_dir), **common)
    with pytest.raises(ValueError, match="61 characters"):
        write_space_folder(tmp_path / "b", base_model=BASE_ID, short_description="x" * 61, **common)
    with pytest.raises(ValueError, match="not a Space colour"):
        write_space_folder(tmp_path / "c", base_model=BASE_ID, color_from="teal", **common)
    with pytest.raises(ValueError, match="hardware 'gpu-huge' is unknown"):
        write_space_folder(tmp_path / "d", base_model=BASE_ID, hardware="gpu-huge", **common)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        create_space("alice/x-chat", base_model=BASE_ID, cai_model=CAI_ID, constitution="harmless")
    with pytest.raises(PublishError, match="a private Space cannot install the hf_cai wheel"):
        create_space("alice/x-chat", base_model=BASE_ID, cai_model=CAI_ID, token=WRITE, private=True)
    with pytest.raises(PublishError, match="a private Space cannot install the hf_cai wheel"):
        publish(
            trained, "alice/private-cai", token=WRITE, base_model_id=BASE_ID, license="mit", private=True, space=True
        )
    assert ("model", "alice/private-cai") not in hub.repos  # refused before the model was pushed
    with pytest.raises(PublishError, match="403") as refused:
        create_space("alice/x-chat", base_model=BASE_ID, cai_model=CAI_ID, constitution="harmless", token=READ)
    assert READ not in str(refused.value)
    monkeypatch.setenv("HF_TOKEN", READ)
    assert (
        main(["space", "create", "alice/x-chat", "--base", BASE_ID, "--model", CAI_ID, "--constitution", "harmless"])
        == 2
    )
    err = capsys.readouterr().err
    assert "403" in err and READ not in err
    assert ("space", "alice/x-chat") not in hub.repos
