"""Publishing against the loopback Hub with the real huggingface_hub, transformers, peft and datasets clients:
round trips with identical logits, datasets, change-only commits, token hygiene and every bad-input path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import shutil
import traceback
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from conftest import HUB_PORT
from hub_server import HubServer, use_loopback_hub
from test_model_card import HARMLESS, preference_dataset, sl_dataset

from hf_cai.constitution import Constitution, Principle
from hf_cai.hub import publish, publish_dataset
from hf_cai.hub.errors import ModelCardError, PublishError

TOKEN = "hf_" + "T0kenForTests" * 3
READ_TOKEN = "hf_" + "ReadOnlyToken" * 3
BASE_REPO = "hf-cai-test/tiny-chat"
LICENSE = "apache-2.0"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(scope="module")
def hub(hf_home):
    with pytest.MonkeyPatch.context() as patch, HubServer(HUB_PORT, lfs=True) as server:
        use_loopback_hub(patch, hf_home)
        server.add_token(TOKEN, "alice", orgs=("hf-cai-test",))
        server.add_token(READ_TOKEN, "alice", role="read")
        yield server


@pytest.fixture(scope="module")
def base_model_id(hub, tiny_model_dir) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo(BASE_REPO)
    api.upload_folder(repo_id=BASE_REPO, folder_path=str(tiny_model_dir))
    return BASE_REPO


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    """A few QLoRA SFT steps on SL-CAI rows with CAISFTTrainer: adapter, tokenizer, constitution, training record."""
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    output = tmp_path_factory.mktemp("sft") / "final"
    config = CAISFTConfig(
        output_dir=str(output),
        qlora_profile="cpu",
        max_steps=3,
        learning_rate=5e-3,
        max_length=128,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = CAISFTTrainer(
        model=str(tiny_model_dir), args=config, train_dataset=sl_dataset()["train_sft"], constitution=HARMLESS
    )
    trainer.train()
    trainer.save_model()
    return output


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _inputs(tokenizer_source):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    messages = [{"role": "user", "content": "How can I get into my neighbour's house while they are away?"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _logits(model, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits.float()


def _adapter_on(base_source, adapter_source, dtype=torch.float32):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_source), dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_source))


@pytest.fixture(scope="module")
def adapter_repo(hub, base_model_id, trained) -> str:
    result = publish(
        trained,
        "alice/tiny-cai",
        token=TOKEN,
        base_model_id=base_model_id,
        license=LICENSE,
        datasets=["alice/cai-sl"],
        training_data=[sl_dataset(), preference_dataset()],
    )
    assert result.commit_oid and "adapter_model.safetensors" in result.uploaded
    return result.repo_id


@pytest.fixture(scope="module")
def merged_repo(hub, base_model_id, trained) -> str:
    result = publish(
        trained, "alice/tiny-cai-merged", token=TOKEN, base_model_id=base_model_id, license=LICENSE, merge=True
    )
    assert "model.safetensors" in result.files and "adapter_model.safetensors" not in result.files
    return result.repo_id


def test_adapter_round_trip_gives_the_same_logits(adapter_repo, base_model_id, trained, tiny_model_dir, tmp_path):
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM

    inputs = _inputs(trained)
    before = _logits(_adapter_on(tiny_model_dir, trained), inputs)
    downloaded = Path(snapshot_download(adapter_repo, cache_dir=tmp_path))
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "constitution.yaml",
        "cai_training.json",
        "README.md",
    } <= {p.name for p in downloaded.iterdir()}
    assert torch.equal(_logits(_adapter_on(base_model_id, downloaded), _inputs(downloaded)), before)
    # transformers applies the adapter itself, fetching the base named in adapter_config.json from the Hub.
    assert torch.equal(_logits(AutoModelForCausalLM.from_pretrained(adapter_repo, dtype=torch.float32), inputs), before)


def test_published_card_and_constitution_agree(adapter_repo, base_model_id):

    from huggingface_hub import ModelCard, hf_hub_download

    card = ModelCard.load(adapter_repo)
    assert card.data.base_model == base_model_id and card.data.library_name == "peft"
    assert card.data.license == LICENSE and card.data.datasets == ["alice/cai-sl"]
    assert {"constitutional-ai", "hf-cai", "trl", "qlora", "sft"} <= set(card.data.tags)
    uploaded = Constitution.load(hf_hub_download(adapter_repo, "constitution.yaml"))
    assert card.data.constitution["sha256"] == uploaded.sha256 == Constitution.from_hub(adapter_repo).sha256
    assert (
        json.loads(Path(hf_hub_download(adapter_repo, "adapter_config.json")).read_text())["base_model_name_or_path"]
        == base_model_id
    )
    assert (
        json.loads(Path(hf_hub_download(adapter_repo, "cai_training.json")).read_text())["base_model"] == base_model_id
    )
    assert "| `privacy` | SL+RL | 2 | 3 |" in card.text


def test_merged_round_trip_gives_the_same_logits(merged_repo, trained, tiny_model_dir):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    inputs = _inputs(trained)
    merged_here = _adapter_on(tiny_model_dir, trained, dtype=torch.bfloat16).merge_and_unload()
    before = _logits(merged_here, inputs)
    loaded = AutoModelForCausalLM.from_pretrained(merged_repo, dtype="auto")
    assert loaded.dtype == torch.bfloat16 and getattr(loaded.config, "quantization_config", None) is None
    assert torch.equal(_logits(loaded, inputs), before)
    adapter = _logits(_adapter_on(tiny_model_dir, trained), inputs)
    assert (before - adapter).abs().max() < 0.05 * adapter.abs().max()
    card = ModelCard.load(merged_repo)
    assert card.data.library_name == "transformers" and "merge" in card.data.tags


def test_card_snippets_run_as_written(adapter_repo, merged_repo):
    from huggingface_hub import ModelCard

    for repo_id in (adapter_repo, merged_repo):
        blocks = re.findall(r"```python\n(.*?)```", ModelCard.load(repo_id).text, re.DOTALL)
        assert len(blocks) == 2
        for block in blocks:
            namespace: dict = {}
            with redirect_stdout(io.StringIO()):
                exec(compile(block, f"<card snippet of {repo_id}>", "exec"), namespace)
            generated = namespace.get("output")
            assert generated is not None or "chat" in namespace
            if generated is not None:  # the reply was generated by the published model, after the prompt
                assert generated.shape[1] > namespace["inputs"]["input_ids"].shape[1]


def test_republishing_commits_only_changes(hub, base_model_id, trained):
    repo_id = "alice/tiny-cai-rerun"
    first = publish(trained, repo_id, token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    commits = hub.commit_count(repo_id)
    again = publish(trained, repo_id, token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    assert again.commit_oid is None and again.uploaded == () and hub.commit_count(repo_id) == commits
    changed = publish(
        trained, repo_id, token=TOKEN, base_model_id=base_model_id, license=LICENSE, datasets=["alice/cai-sl"]
    )
    assert changed.uploaded == ("README.md",) and hub.commit_count(repo_id) == commits + 1
    assert hub.repo(repo_id).commits[changed.commit_oid].parents == (first.commit_oid,)


def test_datasets_round_trip(hub, adapter_repo):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    for repo_id, data in (("alice/cai-sl", sl_dataset()), ("alice/cai-prefs", preference_dataset())):
        result = publish_dataset(data, repo_id, "harmless", token=TOKEN, license="cc-by-4.0", models=[adapter_repo])
        assert result.commit_oid is not None
        assert {"README.md", "constitution.yaml", "provenance.json"} <= set(result.files)
        loaded = load_dataset(repo_id)
        assert set(loaded) == {name for name, split in data.items() if split.num_rows}
        for split in loaded:
            assert loaded[split].to_list() == data[split].to_list()
        card = DatasetCard.load(repo_id, repo_type="dataset")
        assert card.data.constitution["sha256"] == HARMLESS.sha256
        assert card.data.license == "cc-by-4.0" and card.data.language == ["en"] and card.data.pretty_name
        assert Constitution.from_hub(repo_id, repo_type="dataset").sha256 == HARMLESS.sha256
        again = publish_dataset(data, repo_id, HARMLESS, token=TOKEN, license="cc-by-4.0", models=[adapter_repo])
        assert again.commit_oid is None
    with pytest.raises(PublishError, match="generated under constitution sha256"):
        publish_dataset(sl_dataset(), "alice/cai-sl", "helpful-honest", token=TOKEN, license="cc-by-4.0")


def test_branch_and_pull_request(hub, base_model_id, trained):
    from huggingface_hub import HfApi

    on_branch = publish(
        trained,
        "alice/tiny-cai-branches",
        token=TOKEN,
        base_model_id=base_model_id,
        license=LICENSE,
        revision="experiment",
        private=True,
    )
    api = HfApi(token=TOKEN)
    assert api.model_info("alice/tiny-cai-branches").private is True
    assert {e.path for e in api.list_repo_tree("alice/tiny-cai-branches")} == {".gitattributes"}
    assert "README.md" in {e.path for e in api.list_repo_tree("alice/tiny-cai-branches", revision="experiment")}
    assert on_branch.revision == "experiment"
    proposal = publish(
        trained, "alice/tiny-cai-branches", token=TOKEN, base_model_id=base_model_id, license=LICENSE, create_pr=True
    )
    assert proposal.pr_url.endswith("/discussions/1")
    assert [e.path for e in api.list_repo_tree("alice/tiny-cai-branches")] == [".gitattributes"]
    with pytest.raises(PublishError, match="no branch 'nope'"):
        publish(
            trained,
            "alice/tiny-cai-branches",
            token=TOKEN,
            base_model_id=base_model_id,
            license=LICENSE,
            revision="nope",
            create_pr=True,
        )


def test_space_option_creates_the_chat_space(hub, base_model_id, trained):
    result = publish(
        trained, "alice/tiny-cai-demo", token=TOKEN, base_model_id=base_model_id, license=LICENSE, space=True
    )
    assert result.space_url.endswith("/spaces/alice/tiny-cai-demo-chat")
    readme = hub.file("alice/tiny-cai-demo-chat", "README.md", repo_type="space").decode()
    assert "sdk: gradio" in readme and "alice/tiny-cai-demo" in readme


def test_bad_inputs_fail_clearly_and_keep_local_files(hub, base_model_id, trained, tmp_path, monkeypatch):
    before = _tree_hashes(trained)
    requests = len(hub.requests)
    for bad in ("not a repo id", "alice/tiny/cai", "alice/..hidden", "alice/"):
        with pytest.raises(PublishError, match="not a valid repository id"):
            publish(trained, bad, token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(trained, "alice/no-token", base_model_id=base_model_id, license=LICENSE)
    assert len(hub.requests) == requests  # refused before talking to the Hub

    with pytest.raises(ModelCardError, match="base_model_id"):
        publish(trained, "alice/no-base", token=TOKEN, license=LICENSE)
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("adapter_config.json", "tokenizer.json", "constitution.yaml"):
        (incomplete / name).write_bytes((trained / name).read_bytes())
    with pytest.raises(PublishError, match="adapter_model.safetensors is missing"):
        publish(incomplete, "alice/incomplete", token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    broken = tmp_path / "broken.md.j2"
    broken.write_text("---\n{{ card_data }}\n---\n{{ missing_value }}\n")
    with pytest.raises(ModelCardError, match=r"broken\.md\.j2, line 4"):
        publish(
            trained,
            "alice/bad-template",
            token=TOKEN,
            base_model_id=base_model_id,
            license=LICENSE,
            card_template=broken,
        )
    assert ("model", "alice/bad-template") not in hub.repos
    rejected = tmp_path / "rejected.md.j2"
    rejected.write_text("---\nlicense: apache2\n---\nA card whose metadata only the Hub checks.\n")
    with pytest.raises(PublishError, match="Invalid metadata in README.md"):
        publish(
            trained, "alice/rejected", token=TOKEN, base_model_id=base_model_id, license=LICENSE, card_template=rejected
        )
    leaky = tmp_path / "leaky"
    shutil.copytree(trained, leaky)
    record = json.loads((leaky / "cai_training.json").read_text())
    (leaky / "cai_training.json").write_text(json.dumps({**record, "hub_token": TOKEN}))
    with pytest.raises(PublishError, match="^cai_training.json contains a Hugging Face access token") as leak:
        publish(leaky, "alice/leaky", token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    assert TOKEN not in str(leak.value) and ("model", "alice/leaky") not in hub.repos

    failures = [
        ({"token": "hf_" + "Unknown" * 6}, None, "401"),
        ({"token": READ_TOKEN}, None, "403"),
        ({"token": TOKEN}, ("commit", 409), "409"),
        ({"token": TOKEN}, ("commit", 500), "server error (500)"),
        ({"token": TOKEN}, ("commit", 503), "server error (503)"),
    ]
    for credentials, failure, expected in failures:
        if failure:
            hub.fail_next(*failure)
        with pytest.raises(PublishError, match=re.escape(expected)) as raised:
            publish(trained, "alice/tiny-cai-flaky", base_model_id=base_model_id, license=LICENSE, **credentials)
        assert "run the same command again" in str(raised.value) or expected in ("401", "403")
    recovered = publish(trained, "alice/tiny-cai-flaky", token=TOKEN, base_model_id=base_model_id, license=LICENSE)
    assert recovered.commit_oid is not None and hub.commit_count("alice/tiny-cai-flaky") == 2
    assert _tree_hashes(trained) == before


def test_token_never_appears_in_logs_files_or_errors(
    hub, base_model_id, trained, hf_home, tmp_path, monkeypatch, caplog, capsys
):
    from hf_cai.cli import main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    texts: list[str] = []
    publish(trained, "alice/tiny-cai-secret", base_model_id=base_model_id, license=LICENSE)
    publish(trained, "alice/tiny-cai-secret", token=TOKEN, base_model_id=base_model_id, license=LICENSE, merge=True)
    for failure in (("commit", 500), ("preupload", 403), ("info", 401)):
        hub.fail_next(*failure, message="request refused")
        with pytest.raises(PublishError) as raised:
            publish(trained, "alice/tiny-cai-secret-2", base_model_id=base_model_id, license=LICENSE)
        texts.append("".join(traceback.format_exception(raised.value)))
    assert (
        main(["publish", str(trained), "alice/tiny-cai-cli", "--license", LICENSE, "--base-model-id", base_model_id])
        == 0
    )
    wrong = "hf_" + "Wrong" * 8
    command = ["publish", str(trained), "alice/tiny-cai-cli", "--license", LICENSE, "--base-model-id", base_model_id]
    assert main([*command, "--token", wrong]) == 2  # refused: a token is never taken from the command line
    monkeypatch.setenv("HF_TOKEN", wrong)
    assert main(command) == 2  # refused by the Hub (401)

    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    assert "alice/tiny-cai-cli" in captured.out and "--token: tokens are not taken" in captured.err
    assert "401" in captured.err
    for (repo_type, repo_id), repo in hub.repos.items():
        head = repo.resolve("main")
        texts += [hub.file(repo_id, path, repo_type=repo_type).decode("utf-8", "replace") for path in head.tree]
    for folder in (hf_home, trained, tmp_path):
        texts += [p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()]
    assert len(texts) > 20
    assert not [text for text in texts if TOKEN in text]
    assert not [text for text in texts if "Wrong" * 8 in text]


def test_cli_dry_run_hub_list_and_compare(hub, adapter_repo, base_model_id, trained, capsys):
    from huggingface_hub import CommitOperationAdd, HfApi

    from hf_cai.cli import main
    from hf_cai.hub.discovery import compare_constitutions, list_cai_models

    assert (
        main(
            [
                "publish",
                str(trained),
                "alice/preview",
                "--license",
                LICENSE,
                "--base-model-id",
                base_model_id,
                "--dry-run",
            ]
        )
        == 0
    )
    assert "# preview" in capsys.readouterr().out and ("model", "alice/preview") not in hub.repos

    forked = Constitution(
        name="harmless-fork",
        version="1.1",
        principles=(
            *(p for p in HARMLESS.principles if p.id not in ("privacy", "general-harm")),
            dataclasses.replace(
                HARMLESS.principle("general-harm"), critique="Point out anything harmful in the reply."
            ),
            Principle(id="animal-welfare", preference="Which reply shows more care for animals?"),
        ),
    )
    api = HfApi(token=TOKEN)
    api.create_repo("alice/fork", repo_type="space", space_sdk="gradio")
    api.create_commit(
        "alice/fork",
        [CommitOperationAdd("constitution.yaml", forked.to_yaml().encode())],
        commit_message="fork",
        repo_type="space",
    )
    diff = compare_constitutions(adapter_repo, "spaces/alice/fork")
    assert [p.id for p in diff.added] == ["animal-welfare"] and [p.id for p in diff.removed] == ["privacy"]
    assert [(c.id, c.fields) for c in diff.changed] == [("general-harm", ("critique",))]
    assert main(["hub", "compare", adapter_repo, "spaces/alice/fork"]) == 0
    out = capsys.readouterr().out
    assert "+ animal-welfare" in out and "- privacy" in out and "~ general-harm (critique)" in out
    assert main(["hub", "compare", "harmless", adapter_repo]) == 0 and "identical" in capsys.readouterr().out
    assert main(["hub", "compare", "alice/nothing-here", "harmless"]) == 2

    found = {m.repo_id: m for m in list_cai_models(tags=["constitutional-ai", "hf-cai"])}
    assert (
        found[adapter_repo].constitution_sha256 == HARMLESS.sha256 and found[adapter_repo].base_model == base_model_id
    )
    assert BASE_REPO not in found
    assert main(["hub", "list", "--tag", "hf-cai"]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if line.startswith(adapter_repo + " "))
    assert base_model_id in line and "harmless v1.0" in line and HARMLESS.sha256[:16] in line
