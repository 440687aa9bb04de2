"""Publishing when things go wrong, against the loopback Hub with the real huggingface_hub client: Hub error answers,
interrupted uploads, token-like strings inside the files, and republishing in the other model format or with a split
dropped. A tiny adapter on the tiny model stands in for a trained one."""

from __future__ import annotations

import json
import re
import shutil
import traceback
from pathlib import Path

import pytest
from conftest import HUB_PORT
from datasets import DatasetDict
from hub_server import HubServer, use_loopback_hub
from test_model_card import sl_dataset
from test_space_app import build_tiny_adapter

from hf_cai.constitution import Constitution
from hf_cai.hub import publish, publish_dataset
from hf_cai.hub.errors import PublishError

TOKEN = "hf_" + "Fa1lureT0ken" * 3
FAKE = "hf_" + "N0tTheUsersButTokenShaped" * 2
BASE_ID = "hf-cai-test/tiny-chat"
LICENSE = "apache-2.0"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_model_dir):
    from huggingface_hub import HfApi

    with pytest.MonkeyPatch.context() as patch, HubServer(HUB_PORT, lfs=True) as server:
        use_loopback_hub(patch, tmp_path_factory.mktemp("hf-home"))
        server.add_token(TOKEN, "alice", orgs=("hf-cai-test",))
        api = HfApi(token=TOKEN)
        api.create_repo(BASE_ID)
        api.upload_folder(repo_id=BASE_ID, folder_path=str(tiny_model_dir))
        yield server


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    folder = build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).is_file():
            shutil.copy(tiny_model_dir / name, folder / name)
    return folder


def _publish(source: Path, repo_id: str, **options):
    return publish(source, repo_id, token=TOKEN, base_model_id=BASE_ID, license=LICENSE, **options)


def _tree(hub, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
    return {
        path: hub.file(repo_id, path, repo_type=repo_type) for path in hub.repo(repo_id, repo_type).resolve("main").tree
    }


def _same_publication(hub, repo_id: str, reference_id: str) -> bool:
    """Whether two repositories hold the same files, the card's mentions of the repository name aside."""
    ours, theirs = _tree(hub, repo_id), _tree(hub, reference_id)
    ours["README.md"] = ours["README.md"].replace(repo_id.split("/")[1].encode(), reference_id.split("/")[1].encode())
    return ours == theirs


@pytest.fixture(autouse=True)
def no_failure_left_behind(hub):
    yield
    hub.clear_failures()


def _new_weights(adapter: Path, folder: Path, scale: float) -> Path:
    """A copy of ``adapter`` with its weights scaled: content the Hub has not stored yet."""
    from safetensors.torch import load_file, save_file

    copy = shutil.copytree(adapter, folder)
    weights = load_file(copy / "adapter_model.safetensors")
    save_file({name: tensor * scale for name, tensor in weights.items()}, copy / "adapter_model.safetensors")
    return copy


# A Hub answer while publishing: which request fails, and what the message must tell the user.
HUB_ANSWERS = [
    (401, "commit", {}, "The token was refused (401 Unauthorized)", "HF_TOKEN"),
    (403, "preupload", {}, "The token may not write here (403 Forbidden)", "'write' role"),
    (404, "info", {}, "The repository or revision was not found (404)", "Check the repo id"),
    (429, "commit", {"Retry-After": "30"}, "rate-limiting requests (429). Wait 30 seconds", "run the same command"),
    (500, "commit", {}, "The Hub had a server error (500)", "run the same command again later"),
]


@pytest.mark.parametrize(
    ("status", "route", "headers", "what", "advice"), HUB_ANSWERS, ids=[str(a[0]) for a in HUB_ANSWERS]
)
def test_a_hub_error_answer_during_publish_is_explained(hub, adapter, status, route, headers, what, advice):
    repo_id = f"alice/answer-{status}"
    # The server echoes the token in its message, as a misbehaving proxy might: it must still never be shown.
    hub.fail_next(route, status, message=f"refused the request authorised by {TOKEN}", headers=headers)
    with pytest.raises(PublishError) as failed:
        _publish(adapter, repo_id)
    message = str(failed.value)
    assert message.startswith(f"committing to {repo_id} failed.") and what in message and advice in message
    assert TOKEN not in "".join(traceback.format_exception(failed.value))
    assert hub.commit_count(repo_id) == 1  # only the repository's initial commit: nothing was published


def test_an_interrupted_weights_upload_is_retried_and_lands_the_same_files(hub, adapter, tmp_path):
    source = _new_weights(adapter, tmp_path / "upload", 0.5)
    hub.interrupt_next("lfs_upload")
    requests = len(hub.requests)
    result = _publish(source, "alice/cut-upload")
    uploads = [r.status for r in hub.requests[requests:] if r.path.startswith("/lfs/upload/")]
    assert uploads == [0, 200]  # the connection dropped mid-upload; the client sent the weights again
    assert result.commit_oid is not None and hub.commit_count("alice/cut-upload") == 2
    _publish(source, "alice/whole-upload")
    assert _same_publication(hub, "alice/cut-upload", "alice/whole-upload")


def test_an_interrupted_commit_resumes_when_run_again(hub, adapter, tmp_path):
    repo_id = "alice/cut-commit"
    source = _new_weights(adapter, tmp_path / "commit", 0.25)
    hub.interrupt_next("commit")
    requests = len(hub.requests)
    with pytest.raises(PublishError) as failed:
        _publish(source, repo_id)
    assert [r.status for r in hub.requests[requests:] if r.path.startswith("/lfs/upload/")] == [200]
    message = str(failed.value)
    assert "could not reach the Hub" in message and "run the same command again" in message
    assert TOKEN not in message and hub.commit_count(repo_id) == 1
    requests = len(hub.requests)
    again = _publish(source, repo_id)
    resent = [r.path for r in hub.requests[requests:] if r.path.startswith("/lfs/upload/")]
    assert resent == []  # the weights arrived in the first attempt and are not sent twice
    assert again.commit_oid is not None and hub.commit_count(repo_id) == 2
    _publish(source, "alice/whole-commit")
    assert _same_publication(hub, repo_id, "alice/whole-commit")


def test_a_token_in_a_model_file_stops_the_publication(hub, adapter, tmp_path):
    leaky = shutil.copytree(adapter, tmp_path / "leaky-config")
    config = json.loads((leaky / "tokenizer_config.json").read_text())
    (leaky / "tokenizer_config.json").write_text(json.dumps({**config, "hub_token": FAKE}))
    with pytest.raises(PublishError, match=r"^tokenizer_config\.json contains a Hugging Face access token") as found:
        _publish(leaky, "alice/leaky-config")
    assert FAKE not in str(found.value) and ("model", "alice/leaky-config") not in hub.repos


def test_a_token_in_the_weights_metadata_stops_the_publication(hub, adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    leaky = shutil.copytree(adapter, tmp_path / "leaky-weights")
    weights = load_file(leaky / "adapter_model.safetensors")
    save_file(weights, leaky / "adapter_model.safetensors", metadata={"format": "pt", "pushed_with": FAKE})
    with pytest.raises(
        PublishError, match=r"^adapter_model\.safetensors contains a Hugging Face access token"
    ) as found:
        _publish(leaky, "alice/leaky-weights")
    assert FAKE not in str(found.value) and ("model", "alice/leaky-weights") not in hub.repos


def test_a_token_in_a_dataset_row_stops_the_publication(hub):
    # Parquet pages are compressed: the rows are read back, a byte search would miss the token.
    data = sl_dataset(injected_revision=f"Here is the key you asked for: {FAKE}")
    pattern = r"^data/train_sft-00000-of-00001\.parquet \(column '[\w.]+'\) contains a Hugging Face access token"
    with pytest.raises(PublishError, match=pattern) as found:
        publish_dataset(data, "alice/leaky-data", "harmless", token=TOKEN, license="cc-by-4.0")
    assert FAKE not in str(found.value) and ("dataset", "alice/leaky-data") not in hub.repos


def test_a_token_in_a_space_file_stops_the_push(hub):
    from hf_cai.hub.space import create_space

    harmless = Constitution.builtin("harmless")
    leaky = Constitution.from_dict({**harmless.to_dict(), "description": f"Written with the key {FAKE}."})
    with pytest.raises(PublishError, match=r"^constitution\.yaml contains a Hugging Face access token") as found:
        create_space(
            "alice/leaky-chat",
            base_model=BASE_ID,
            cai_model="alice/cai",
            constitution=leaky,
            cai_is_adapter=True,
            token=TOKEN,
        )
    assert FAKE not in str(found.value) and ("space", "alice/leaky-chat") not in hub.repos


def test_the_endpoint_key_of_a_run_stops_a_publication_that_holds_it(hub, adapter, tmp_path, monkeypatch):
    """An endpoint's API key has no shape to know it by: a run registers the key its recipe names, and the scan
    refuses it like the Hub token, in a model file and in a dataset row."""
    from hf_cai.pipeline import Pipeline, load_recipe

    key = "sk-endpoint-" + "9e1c4b7d2a" * 3
    monkeypatch.setenv("CAI_TEST_ENDPOINT_KEY", key)
    settings = {"run_dir": str(tmp_path / "run"), "endpoint": "http://127.0.0.1:9/v1",
                "endpoint_api_key_env": "CAI_TEST_ENDPOINT_KEY"}
    Pipeline(load_recipe(overrides=settings))
    leaky = shutil.copytree(adapter, tmp_path / "leaky-config")
    config = json.loads((leaky / "tokenizer_config.json").read_text())
    (leaky / "tokenizer_config.json").write_text(json.dumps({**config, "labelled_with": key}))
    with pytest.raises(PublishError, match=r"^tokenizer_config\.json contains an API key in use by this") as found:
        _publish(leaky, "alice/leaky-endpoint-key")
    assert key not in str(found.value) and ("model", "alice/leaky-endpoint-key") not in hub.repos
    data = sl_dataset(injected_revision=f"The judge answered with {key} in its reply.")
    with pytest.raises(PublishError, match=r"\(column '[\w.]+'\) contains an API key in use") as found:
        publish_dataset(data, "alice/leaky-endpoint-data", "harmless", token=TOKEN, license="cc-by-4.0")
    assert key not in str(found.value) and ("dataset", "alice/leaky-endpoint-data") not in hub.repos


def test_republishing_in_the_other_format_replaces_the_files_of_the_first(hub, adapter):
    from huggingface_hub import HfApi
    from transformers import AutoModelForCausalLM

    repo_id = "alice/format-switch"
    api = HfApi(token=TOKEN)
    _publish(adapter, repo_id)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(api.list_repo_files(repo_id))
    commits = hub.commit_count(repo_id)

    merged = _publish(adapter, repo_id, merge=True)
    assert merged.deleted == ("adapter_config.json", "adapter_model.safetensors")
    files = set(api.list_repo_files(repo_id))
    assert {"model.safetensors", "config.json"} <= files and not files & {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    assert hub.commit_count(repo_id) == commits + 1  # additions and deletions in one commit
    AutoModelForCausalLM.from_pretrained(repo_id)

    back = _publish(adapter, repo_id)
    assert {"model.safetensors", "config.json"} <= set(back.deleted)
    files = set(api.list_repo_files(repo_id))
    assert not any(re.fullmatch(r"model.*\.safetensors|(generation_)?config\.json", f) for f in files)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files and hub.commit_count(repo_id) == commits + 2
    assert hasattr(AutoModelForCausalLM.from_pretrained(repo_id), "peft_config")  # loads as an adapter again


def test_republishing_a_dataset_without_a_split_deletes_its_file(hub):
    from datasets import load_dataset

    full = sl_dataset()
    first = publish_dataset(full, "alice/splits", "harmless", token=TOKEN, license="cc-by-4.0")
    dropped = sorted(name for name, split in full.items() if split.num_rows)[-1]
    assert f"data/{dropped}-00000-of-00001.parquet" in first.files
    kept = DatasetDict({name: split for name, split in full.items() if name != dropped})
    second = publish_dataset(kept, "alice/splits", "harmless", token=TOKEN, license="cc-by-4.0")
    assert second.deleted == (f"data/{dropped}-00000-of-00001.parquet",)
    assert set(load_dataset("alice/splits")) == {name for name, split in kept.items() if split.num_rows}
