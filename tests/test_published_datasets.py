"""The pipeline publishes its SL-CAI and preference datasets beside the model, against the loopback Hub with the real
huggingface_hub and datasets clients: each with its card (license, description, provenance), constitution.yaml and
provenance.json, the preference pairs with the probability from each option order, the model card listing them, no
path of this machine in any published file; and the offline publication writes the dataset folders beside the model's.

One tiny-model run serves the module; the offline publication republishes a copy of it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import HUB_PORT
from hub_server import HubServer, use_loopback_hub

from hf_cai.constitution import Constitution
from hf_cai.pipeline import Pipeline, load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TOKEN = "hf_" + "Publ1shedData" * 3
REPO = "alice/tiny-cai"
SL_REPO, PREFS_REPO = f"{REPO}-sl-cai", f"{REPO}-prefs"
HARMLESS = Constitution.builtin("harmless")
RECIPE = {
    "model": "tiny",
    "tiny_pretrain_steps": 0,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": "builtin:helpful",
    "max_prompts": 6,
    "qlora_profile": "cpu",
    "seed": 3,
    "sl_data": {"rounds": 1, "max_new_tokens": 6, "few_shot": False, "shard_size": 4, "test_size": 0.25,
                "num_helpful_prompts": 2},
    # Six tokens cut every reply short: the gates flag every row, and SFT trains on them anyway (the gates' counts
    # still reach the card).
    "sl_quality": {"exclude_flagged": False},
    "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 0.002},
    "pref_data": {"max_new_tokens": 6, "few_shot": False, "shard_size": 4, "test_size": 0.25, "temperature": 1.0},
    "dpo": {"max_steps": 1, "per_device_train_batch_size": 2},
    "eval": {"max_prompts": 2, "max_new_tokens": 4},
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch, HubServer(HUB_PORT, lfs=True) as server:
        use_loopback_hub(patch, tmp_path_factory.mktemp("hf-home"))
        patch.setenv("HF_TOKEN", TOKEN)  # the pipeline publishes with the environment's token
        server.add_token(TOKEN, "alice")
        yield server


@pytest.fixture(scope="module")
def run_dir(hub, tmp_path_factory) -> Path:
    """A tiny run, published to the loopback Hub (publish.repo_id)."""
    run_dir = tmp_path_factory.mktemp("published") / "run"
    results = Pipeline(load_recipe(overrides={**RECIPE, "run_dir": str(run_dir), "publish": {"repo_id": REPO}})).run()
    assert "publish" in results
    return run_dir


def _tree(hub, repo_id: str, repo_type: str) -> dict[str, bytes]:
    return {path: hub.file(repo_id, path, repo_type=repo_type) for path in hub.repo(repo_id, repo_type).resolve("main").tree}


def _front_matter(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _local_paths(run: Path) -> set[str]:
    """What would give this machine's folders away: the run directory and the temporary and home folders."""
    return {str(run), str(run.resolve()), tempfile.gettempdir().rstrip("/") + "/", str(Path.home()) + "/"}


def _files_naming(files: dict[str, bytes], paths: set[str]) -> dict[str, list[str]]:
    text = {name: content.decode("utf-8", errors="ignore") for name, content in files.items()}
    return {name: [p for p in paths if p in body] for name, body in text.items() if any(p in body for p in paths)}


def test_the_pipeline_publishes_the_model_and_both_datasets(hub, run_dir):
    publication = json.loads((run_dir / "publish" / "publication.json").read_text())
    assert [(d["stage"], d["repo_id"]) for d in publication["datasets"]] == [("sl_data", SL_REPO), ("pref_data", PREFS_REPO)]
    assert "README.md" in _tree(hub, REPO, "model")
    for repo_id, kind, generated_by in ((SL_REPO, "sl-cai", {"generator"}), (PREFS_REPO, "rl-cai", {"policy", "feedback"})):
        files = _tree(hub, repo_id, "dataset")
        assert {"README.md", "constitution.yaml", "provenance.json"} <= set(files)
        assert any(name.startswith("data/") and name.endswith(".parquet") for name in files)
        assert Constitution.from_dict(yaml.safe_load(files["constitution.yaml"])).sha256 == HARMLESS.sha256

        metadata = _front_matter(files["README.md"])
        assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en"]
        assert kind in metadata["tags"] and metadata["constitution"]["sha256"] == HARMLESS.sha256
        assert metadata["pretty_name"].startswith(repo_id.split("/")[1] + ": ")
        card = files["README.md"].decode()
        description = metadata["pretty_name"].split(": ", 1)[1]
        assert f"**{description}.**" in card  # the same description opens the text
        assert "## Provenance" in card and "[`provenance.json`](./provenance.json)" in card

        provenance = json.loads(files["provenance.json"])
        assert set(provenance["models"]) == generated_by
        assert provenance["seed"] == 3 and provenance["constitution"]["sha256"] == HARMLESS.sha256
        assert provenance["constitution"]["file"] == "constitution.yaml"
        assert {"temperature", "top_p", "max_new_tokens"} <= set(provenance["settings"])
        assert "shard_size" not in provenance["settings"]
        for role, model in provenance["models"].items():
            assert f"| {model} | {role}:" in card
        assert provenance["prompts"].startswith("builtin:red_team (the first 6)")

    sl = json.loads(hub.file(SL_REPO, "provenance.json", repo_type="dataset"))
    assert sl["models"] == {"generator": "hf-cai/tiny-chat"} and sl["settings"]["rounds"] == 1
    prefs = json.loads(hub.file(PREFS_REPO, "provenance.json", repo_type="dataset"))
    assert prefs["models"]["policy"].startswith("hf-cai/tiny-chat with this run's SFT LoRA adapter")
    assert prefs["models"]["feedback"] == "hf-cai/tiny-chat (the base model)"
    assert prefs["settings"]["num_principles"] == 2
    # The records beside each dataset folder reached the cards.
    assert "checked by hf_cai's quality gates as the data was made" in hub.file(SL_REPO, "README.md", repo_type="dataset").decode()
    assert "Before labelling, the feedback model answered" in hub.file(PREFS_REPO, "README.md", repo_type="dataset").decode()


def test_the_preference_dataset_keeps_each_option_orders_probability(hub, run_dir):
    from datasets import load_dataset

    pairs = load_dataset(PREFS_REPO)
    rows = [row for split in pairs.values() for row in split]
    assert rows
    for row in rows:
        assert row["chosen_prob_as_a"] is not None and row["chosen_prob_as_b"] is not None
        assert (row["chosen_prob_as_a"] + row["chosen_prob_as_b"]) / 2 == pytest.approx(row["chosen_prob"])
    card = hub.file(PREFS_REPO, "README.md", repo_type="dataset").decode()
    assert "## Option orders" in card and f"Over the {len(rows)} rows that record them" in card


def test_the_sl_data_counts_revisions_and_helpful_replies_and_pairs_only_revisions(hub, run_dir):
    from datasets import load_dataset

    data = load_dataset(SL_REPO)
    card = hub.file(SL_REPO, "README.md", repo_type="dataset").decode()
    sft = [row for name in ("train_sft", "test_sft") if name in data for row in data[name]]
    assert {row["kind"] for row in sft} == {"revised", "helpful"}
    for name, split in data.items():
        kinds = split["kind"]
        assert f"| {name} | {len(kinds)} | {kinds.count('revised')} | {kinds.count('helpful')} |" in card
    for name in ("train_prefs", "test_prefs"):
        for row in data[name] if name in data else []:
            assert row["kind"] == "revised" and row["chosen"] != row["rejected"]


def test_the_model_card_lists_the_datasets_and_shows_the_chart(hub, run_dir):
    files = _tree(hub, REPO, "model")
    metadata = _front_matter(files["README.md"])
    assert metadata["datasets"] == [SL_REPO, PREFS_REPO]
    assert metadata["language"] == "en" and metadata["pipeline_tag"] == "text-generation"
    assert metadata["library_name"] == "peft" and metadata["base_model"] == "hf-cai/tiny-chat"
    assert {"constitutional-ai", "hf-cai", "trl", "dpo", "qlora"} <= set(metadata["tags"])
    card = files["README.md"].decode()
    assert f"[{SL_REPO}](https://huggingface.co/datasets/{SL_REPO})" in card
    assert "](eval/chart.png)" in card and "(./eval/results.json)" in card
    assert {"eval/chart.png", "eval/results.json"} <= set(files)
    results = json.loads(files["eval/results.json"])
    assert results["models"]["cai"] == REPO  # the evaluated folder is named by the repository it is published to
    assert f"This model (`{REPO}`)" in card


def test_nothing_published_names_a_path_of_this_machine(hub, run_dir):
    paths = _local_paths(run_dir)
    for repo_id, repo_type in ((REPO, "model"), (SL_REPO, "dataset"), (PREFS_REPO, "dataset")):
        files = _tree(hub, repo_id, repo_type)
        assert _files_naming(files, paths) == {}, f"{repo_type} {repo_id}"


def test_the_offline_publication_writes_the_dataset_folders_beside_the_models(run_dir, tmp_path):
    copy = tmp_path / "offline"
    shutil.copytree(run_dir, copy)
    folder = copy / "hub-repo"
    recipe = load_recipe(overrides={**RECIPE, "run_dir": str(copy), "publish": {"folder": str(folder)}})
    Pipeline(recipe).run()
    model = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    ids = [f"local/{copy.name}-cai-sl-cai", f"local/{copy.name}-cai-prefs"]
    assert _front_matter(model["README.md"])["datasets"] == ids
    assert {"eval/chart.png", "eval/results.json", "constitution.yaml"} <= set(model)
    for suffix in ("-sl-cai", "-prefs"):
        written = copy / f"hub-repo{suffix}"
        files = {p.relative_to(written).as_posix(): p.read_bytes() for p in written.rglob("*") if p.is_file()}
        assert {"README.md", "constitution.yaml", "provenance.json"} <= set(files)
        assert any(name.startswith("data/") for name in files)
        assert _files_naming(files, _local_paths(copy)) == {}
    assert _files_naming(model, _local_paths(copy)) == {}
