"""Model and dataset cards: metadata that survives ModelCard.load, statistics computed from the data's provenance,
clear refusals (license, base model, foreign data, template errors) and the layouts publishing accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict
from huggingface_hub import DatasetCard, ModelCard
from safetensors.numpy import save_file

from hf_cai.builders.ai_feedback import assemble_preference_dataset, preference_record
from hf_cai.builders.critique_revision import assemble_sl_dataset, sl_record
from hf_cai.constitution import Constitution
from hf_cai.hub.dataset_card import build_dataset_card
from hf_cai.hub.errors import ModelCardError, PublishError
from hf_cai.hub.model_card import build_model_card
from hf_cai.hub.source import locate_training_output

HARMLESS = Constitution.builtin("harmless")
# Principles each SL row was revised under (two rounds for the first rows) and each preference row was judged under.
SL_ASSIGNMENTS = [
    ["general-harm", "privacy"],
    ["general-harm", "general-harm"],
    ["privacy"],
    ["illegal-activity"],
    ["general-harm"],
]
RL_ASSIGNMENTS = [["general-harm", "privacy"], ["privacy"], ["violence-weapons", "privacy"]]


def sl_dataset(constitution: Constitution = HARMLESS, *, injected_revision: str | None = None):
    """An SL-CAI DatasetDict in the builders' layout, with known principles per row."""
    records = []
    for index, principles in enumerate(SL_ASSIGNMENTS):
        revisions = [
            {
                "round": step,
                "principle_id": principle,
                "critique": f"Critique {index}.{step}: the reply could help someone cause harm ({principle}).",
                "revision": injected_revision
                if injected_revision and step == 0
                else f"Revision {index}.{step}: a safer reply.",
            }
            for step, principle in enumerate(principles)
        ]
        records.append(
            sl_record(
                [{"role": "user", "content": f"Red-team request number {index}?"}],
                f"Initial harmful reply {index}.",
                revisions[-1]["revision"],
                revisions,
                "revised",
                constitution.sha256,
            )
        )
    return assemble_sl_dataset(records, test_size=0.0, seed=0)


def preference_dataset(constitution: Constitution = HARMLESS):
    """An RL-CAI preference DatasetDict (split ``train``) with known principles per row."""
    records = [
        preference_record(
            [{"role": "user", "content": f"Request {index}?"}],
            f"Careful reply {index}.",
            f"Careless reply {index}.",
            0.8,
            principles,
            [0.8] * len(principles),
            constitution.sha256,
        )
        for index, principles in enumerate(RL_ASSIGNMENTS)
    ]
    return DatasetDict({"train": assemble_preference_dataset(records, test_size=0.0, seed=0)})


def training_record(stage: str, base_model: str, **extra) -> dict:
    """A cai_training.json in the trainers' schema (see hf_cai.trainers)."""
    return {
        "schema_version": 1,
        "stage": stage,
        "method": "qlora",
        "trainer": f"CAI{stage.upper()}Trainer",
        "base_model": base_model,
        "quantization": "nf4",
        "lora": {"peft_type": "LORA", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
        "qlora_profile": "cpu",
        "hyperparameters": {"learning_rate": 0.0002, "max_steps": 30, "per_device_train_batch_size": 2},
        "effective_batch_size": 2,
        "dataset_sizes": {"train": 5, "eval": None},
        "constitution": {"name": HARMLESS.name, "version": HARMLESS.version, "sha256": HARMLESS.sha256},
        "global_step": 30,
        "metrics": {"train_loss": 1.25, "train_runtime": 12.5},
        "hardware": {"device_type": "cuda", "device_name": "NVIDIA GeForce RTX 4060", "num_processes": 1},
        "versions": {"trl": "1.16.0", "peft": "0.21.2"},
        **extra,
    }


def write_adapter(folder: Path, base_model: str, stage: str = "sft", **record) -> Path:
    """A trainer output folder: adapter config and weights, constitution, training record."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": base_model, "peft_type": "LORA"})
    )
    save_file({"lora_A": np.zeros((2, 2), dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    HARMLESS.save(folder / "constitution.yaml")
    (folder / "cai_training.json").write_text(json.dumps(training_record(stage, base_model, **record)))
    return folder


EVAL_RESULTS = {
    "constitution_sha256": HARMLESS.sha256,
    "metrics": [
        {
            "name": "harmlessness win rate",
            "value": 0.75,
            "ci95": [0.55, 0.88],
            "n": 32,
            "type": "win_rate",
            "dataset": "hf-cai red-team prompts",
        },
        {
            "name": "helpfulness win rate",
            "value": 0.5,
            "ci95": [0.33, 0.67],
            "n": 32,
            "type": "win_rate",
            "dataset": "hf-cai helpfulness prompts",
        },
        {
            "name": "evasive refusals (base)",
            "value": 0.25,
            "ci95": [0.13, 0.42],
            "n": 32,
            "type": "evasive_refusal_rate",
            "dataset": "hf-cai red-team prompts",
        },
        {
            "name": "evasive refusals (CAI)",
            "value": 0.125,
            "ci95": [0.05, 0.28],
            "n": 32,
            "type": "evasive_refusal_rate",
            "dataset": "hf-cai red-team prompts",
        },
    ],
    "samples": [],
}


def table_row(card_text: str, principle_id: str) -> list[str]:
    line = next(line for line in card_text.splitlines() if line.startswith(f"| `{principle_id}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    return write_adapter(tmp_path / "out", "org/tiny-chat")


def test_metadata_round_trips_through_modelcard_load(adapter_dir, tmp_path):
    card = build_model_card(
        adapter_dir,
        repo_id="alice/tiny-cai",
        license="apache-2.0",
        datasets=["alice/cai-sl", "alice/cai-prefs"],
        training_data=[sl_dataset(), preference_dataset()],
        eval_results=EVAL_RESULTS,
    )
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data

    assert data.base_model == "org/tiny-chat"
    assert data.datasets == ["alice/cai-sl", "alice/cai-prefs"]
    assert data.library_name == "peft" and data.license == "apache-2.0" and data.pipeline_tag == "text-generation"
    assert data.tags == ["constitutional-ai", "hf-cai", "trl", "qlora", "sft"]
    assert data.constitution == {"name": "harmless", "version": "1.0", "sha256": HARMLESS.sha256}
    # model-index holds this model's own results only: no base-model rows, no win rates (comparisons).
    results = {(r.metric_name, r.metric_value) for r in data.eval_results}
    assert results == {("evasive refusals (CAI)", 0.125)}
    assert data.model_name == "tiny-cai"


def test_principle_table_counts_training_rows_per_principle(adapter_dir):
    text = str(
        build_model_card(
            adapter_dir,
            repo_id="alice/tiny-cai",
            license="mit",
            training_data=[sl_dataset(), preference_dataset()["train"]],
        )
    )
    # general-harm: SL rows 0, 1 (twice in one row: counted once) and 4; RL row 0.
    assert table_row(text, "general-harm")[2:4] == ["3", "1"]
    assert table_row(text, "privacy")[2:4] == ["2", "3"]
    assert table_row(text, "illegal-activity")[2:4] == ["1", "0"]
    assert table_row(text, "violence-weapons")[2:4] == ["0", "1"]
    assert len([line for line in text.splitlines() if line.startswith("| `")]) == len(HARMLESS.principles)
    assert "up to 2\n  critique → revision rounds" in text


def test_card_shows_sampled_chains_escaped(adapter_dir):
    data = sl_dataset(injected_revision="Fine. <script>alert(1)</script> | not a table cell")
    text = str(build_model_card(adapter_dir, repo_id="alice/x", license="mit", training_data=[data], num_examples=3))
    examples = re.findall(r"<summary>Example \d+</summary>", text)
    assert len(examples) == 3
    assert "Red-team request number" in text and "Critique " in text and "Revision " in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; | not a table cell" in text


def test_evaluation_and_loading_sections(adapter_dir):
    text = str(build_model_card(adapter_dir, repo_id="alice/tiny-cai", license="mit", eval_results=EVAL_RESULTS))
    assert "| harmlessness win rate | 75.0% | 55.0% – 88.0% | 32 |" in text  # a first-format results.json
    assert "| evasive refusals (CAI) | 12.5% |" in text and "does not record the judge's quality" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("alice/tiny-cai"' in text
    assert "@misc{bai2022constitutional" in text and "2212.08073" in text
    merged = str(build_model_card(adapter_dir, repo_id="alice/tiny-merged", license="mit", merged=True))
    assert "library_name: transformers" in merged and "AutoPeftModel" not in merged and "- merge" in merged


def test_license_is_required_and_checked(adapter_dir):
    with pytest.raises(ModelCardError, match="license is required"):
        build_model_card(adapter_dir, repo_id="alice/x", license=None)
    with pytest.raises(ModelCardError, match="'apache-2.0'"):
        build_model_card(adapter_dir, repo_id="alice/x", license="apache2.0")
    with pytest.raises(ModelCardError, match="license_name"):
        build_model_card(adapter_dir, repo_id="alice/x", license="other")
    card = build_model_card(
        adapter_dir, repo_id="alice/x", license="other", license_name="my-license", license_link="LICENSE"
    )
    assert card.data.license_name == "my-license"


def test_local_base_model_needs_its_hub_id(tmp_path):
    base = tmp_path / "models" / "tiny-base"
    base.mkdir(parents=True)
    folder = write_adapter(tmp_path / "out", str(base))
    with pytest.raises(ModelCardError, match="base_model_id") as refused:
        build_model_card(folder, repo_id="alice/x", license="mit")
    assert str(base) in str(refused.value)
    card = build_model_card(folder, repo_id="alice/x", license="mit", base_model_id="org/tiny-base")
    assert card.data.base_model == "org/tiny-base"
    with pytest.raises(ModelCardError, match="not a Hub repository id"):
        build_model_card(folder, repo_id="alice/x", license="mit", base_model_id=str(base))


def test_data_from_another_constitution_is_refused(adapter_dir):
    other = Constitution.builtin("helpful-honest")
    with pytest.raises(ModelCardError, match=other.sha256):
        build_model_card(adapter_dir, repo_id="alice/x", license="mit", training_data=[sl_dataset(other)])


def test_template_errors_name_the_template_and_line(adapter_dir, tmp_path):
    undefined = tmp_path / "undefined.md.j2"
    undefined.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }}\n{{ no_such_variable }}\n")
    with pytest.raises(ModelCardError, match=r"undefined\.md\.j2, line 6: UndefinedError.*no_such_variable"):
        build_model_card(adapter_dir, repo_id="alice/x", license="mit", template=undefined)
    broken = tmp_path / "broken.md.j2"
    broken.write_text("---\n{{ card_data }}\n---\n{% if %}\n")
    with pytest.raises(ModelCardError, match=r"broken\.md\.j2, line 4: syntax error"):
        build_model_card(adapter_dir, repo_id="alice/x", license="mit", template=broken)
    custom = tmp_path / "custom.md.j2"
    custom.write_text("---\n{{ card_data }}\n---\n\nAligned to {{ constitution.name }}.\n")
    assert "Aligned to harmless." in str(
        build_model_card(adapter_dir, repo_id="alice/x", license="mit", template=custom)
    )


def test_run_directory_gives_stages_datasets_and_evaluation(tmp_path):
    run = tmp_path / "run"
    write_adapter(run / "sft" / "final", "org/tiny-chat", stage="sft")
    write_adapter(run / "dpo" / "final", "org/tiny-chat", stage="dpo", soft_labels=True)
    (run / "manifest.json").write_text("{}")
    sl_dataset().save_to_disk(str(run / "sl_data" / "dataset"))
    preference_dataset().save_to_disk(str(run / "pref_data" / "dataset"))
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps(EVAL_RESULTS))

    for source in (run, run / "dpo", run / "dpo" / "final"):
        located = locate_training_output(source)
        assert located.model_dir == run / "dpo" / "final" and located.run_dir == run
        assert [r["stage"] for r in located.stage_records] == ["sft", "dpo"]
    card = build_model_card(run, repo_id="alice/tiny-cai", license="mit")
    text = str(card)
    assert card.data.tags[-2:] == ["sft", "dpo"] and card.data.eval_results
    assert "The labels are **soft**" in text and "Reinforcement stage" in text
    assert table_row(text, "privacy")[2:4] == ["2", "3"]


def _flat(card) -> str:
    return " ".join(str(card).split())


def test_a_card_of_a_gguf_run_names_the_file_its_sha256_and_quantisation(tiny_gguf_file, gguf_cache, tmp_path,
                                                                        monkeypatch):
    from hf_cai.gguf import resolve_model, weights_source

    converted = resolve_model(tiny_gguf_file)
    source = weights_source(converted)
    adapter = write_adapter(tmp_path / "adapter", converted, base_weights=source)
    card = build_model_card(adapter, repo_id="alice/x", license="mit", base_model_id="org/tiny-chat")
    text = _flat(card)
    assert card.data.base_model == "org/tiny-chat"
    assert (f"trained and evaluated on the weights of the GGUF file `tiny-chat.Q4_1.gguf` (quantisation Q4_1; "
            f"tensors: 16 Q4_1, 5 F32; sha256 `{source['sha256']}`), de-quantised to float32, not on the weights of "
            "the [org/tiny-chat]") in text
    assert "the adapter gives a model close to the one trained and evaluated here but not identical to it" in text

    merged = _flat(build_model_card(adapter, repo_id="alice/x", license="mit", base_model_id="org/tiny-chat",
                                    merged=True))
    assert "merged into a 16-bit copy of the de-quantised weights of `tiny-chat.Q4_1.gguf`" in merged
    assert "The adapter is merged into those de-quantised weights" in merged
    # Published on a machine without the converted folder (nor the GGUF file in its cache): the merge loads the Hub
    # model's own weights, and the card says so.
    monkeypatch.setenv("HF_CAI_CACHE", str(tmp_path / "another-machine-cache"))
    elsewhere = write_adapter(tmp_path / "elsewhere", str(tmp_path / "gone"), base_weights=source)
    moved = _flat(build_model_card(elsewhere, repo_id="alice/x", license="mit", base_model_id="org/tiny-chat",
                                   merged=True))
    assert "a 16-bit copy of the base weights" in moved and "merged into the repository's own weights" in moved
    # A run recorded before base_weights existed: the converted folder it was trained on still says.
    monkeypatch.setenv("HF_CAI_CACHE", str(gguf_cache))
    older = write_adapter(tmp_path / "older", converted)
    assert source["sha256"] in _flat(build_model_card(older, repo_id="alice/x", license="mit",
                                                      base_model_id="org/tiny-chat"))


def test_a_card_of_a_hub_model_says_nothing_of_gguf_files(adapter_dir):
    for merged in (False, True):
        text = _flat(build_model_card(adapter_dir, repo_id="alice/x", license="mit", merged=merged))
        assert "GGUF" not in text and "Base weights" not in text and "de-quantised" not in text


def test_the_card_says_the_reward_model_started_from_the_base_model(tmp_path):
    run = tmp_path / "run"
    write_adapter(run / "sft" / "final", "org/tiny-chat", stage="sft", initial_adapter=None)
    write_adapter(run / "reward" / "final", "org/tiny-chat", stage="reward", soft_labels=True, initial_adapter=None)
    write_adapter(run / "grpo" / "final", "org/tiny-chat", stage="grpo")
    (run / "manifest.json").write_text("{}")
    text = str(build_model_card(run, repo_id="alice/tiny-cai", license="mit"))
    reward_row = next(line for line in text.splitlines() if line.startswith("| reward |"))
    assert "reward model trained from the base model on AI-labelled pairs" in reward_row
    assert "The reward model was trained on these pairs from the base model" in text

    write_adapter(run / "reward" / "final", "org/tiny-chat", stage="reward", initial_adapter="runs/x/sft/final")
    text = str(build_model_card(run, repo_id="alice/tiny-cai", license="mit"))
    assert "from the base model" not in text and "further from a saved adapter" in text


def test_unusable_sources_are_explained(tmp_path):
    with pytest.raises(PublishError, match="no such folder"):
        locate_training_output(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="found no model"):
        locate_training_output(tmp_path / "empty")
    folder = write_adapter(tmp_path / "no-weights", "org/base")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(PublishError, match="adapter_model.safetensors is missing"):
        locate_training_output(folder)
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(PublishError, match="only safetensors"):
        locate_training_output(folder)
    broken = write_adapter(tmp_path / "broken-record", "org/base")
    (broken / "cai_training.json").write_text('{"stage": "sft",,}')
    with pytest.raises(PublishError, match=r"cai_training.json: not valid JSON \(line 1, column 17"):
        locate_training_output(broken)


@pytest.mark.parametrize("kind", ["sl-cai", "rl-cai"])
def test_dataset_card_metadata_and_content(kind, tmp_path):
    data = sl_dataset() if kind == "sl-cai" else preference_dataset()
    card = build_dataset_card(
        data, repo_id="alice/cai-data", constitution=HARMLESS, license="cc-by-4.0", models=["alice/tiny-cai"]
    )
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md").data
    assert loaded.license == "cc-by-4.0" and kind in loaded.tags and "constitutional-ai" in loaded.tags
    assert loaded.constitution["sha256"] == HARMLESS.sha256
    splits = [f["split"] for f in loaded.configs[0]["data_files"]]
    assert splits == list(data)
    text = str(card)
    assert table_row(text, "privacy")[1] == ("2" if kind == "sl-cai" else "3")
    assert "[alice/tiny-cai](https://huggingface.co/alice/tiny-cai)" in text
    assert ("chosen_prob 0.8" in text) == (kind == "rl-cai")


def test_a_card_names_only_the_datasets_it_is_given(adapter_dir, tmp_path):
    card = build_model_card(adapter_dir, repo_id="alice/tiny-cai", license="mit")
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.datasets is None and "## Training data" not in str(card)
    assert data.language == "en" and data.pipeline_tag == "text-generation" and data.base_model == "org/tiny-chat"


def test_a_publication_ships_the_evaluation_its_card_links_without_local_paths(tmp_path):
    from hf_cai.hub import publish_to_folder

    run = tmp_path / "run"
    write_adapter(run / "sft" / "final", "org/tiny-chat", stage="sft")
    write_adapter(run / "dpo" / "final", "org/tiny-chat", stage="dpo", output_dir=str(run / "dpo"))
    (run / "manifest.json").write_text("{}")
    (run / "eval").mkdir()
    models = {"base": "org/tiny-chat", "cai": str(run / "dpo" / "final"), "judge": "org/tiny-chat"}
    (run / "eval" / "results.json").write_text(json.dumps({**EVAL_RESULTS, "models": models}))
    (run / "eval" / "chart.png").write_bytes(b"\x89PNG\r\n\x1a\n chart")

    out = tmp_path / "repo"
    files = publish_to_folder(run, out, repo_id="alice/tiny-cai", license="mit")
    assert {"eval/chart.png", "eval/results.json", "README.md", "cai_training.json"} <= set(files)
    assert files[-1] == "README.md"
    assert (out / "eval" / "chart.png").read_bytes() == (run / "eval" / "chart.png").read_bytes()
    assert json.loads((out / "eval" / "results.json").read_text())["models"]["cai"] == "alice/tiny-cai"
    assert json.loads((out / "cai_training.json").read_text())["output_dir"] == "dpo"  # relative to the run
    for path in out.rglob("*"):
        if path.is_file():
            assert str(tmp_path) not in path.read_bytes().decode("utf-8", errors="ignore"), path


def test_dataset_folders_carry_their_provenance_kinds_and_option_orders(tmp_path):
    from hf_cai.hub.dataset_publish import publish_dataset_to_folder

    records = [
        sl_record([{"role": "user", "content": "Harmful?"}], "Bad.", "Better.", [
            {"round": 1, "principle_id": "privacy", "critique": "c", "revision": "Better."}], "revised", HARMLESS.sha256),
        sl_record([{"role": "user", "content": "Same?"}], "Same.", "Same.", [
            {"round": 1, "principle_id": "privacy", "critique": "c", "revision": "Same."}], "revised", HARMLESS.sha256),
        sl_record([{"role": "user", "content": "Benign?"}], "Sure.", "Sure.", [], "helpful", HARMLESS.sha256),
    ]
    build = tmp_path / "sl"
    assemble_sl_dataset(records, test_size=0.0, seed=0).save_to_disk(str(build / "dataset"))
    (build / "fingerprint.json").write_text(json.dumps({
        "builder": "critique_revision", "format_version": 2, "constitution_sha256": HARMLESS.sha256,
        "config": {"seed": 7, "temperature": 0.7, "top_p": 1.0, "rounds": 1, "shard_size": 4, "stop": []},
        "model": {"backend": "transformers", "model": "smollm2-135m-instruct", "adapter": str(tmp_path / "ad")},
    }))
    data = assemble_sl_dataset(records, test_size=0.0, seed=0)
    assert data["train_prefs"]["initial_response"] == ["Bad."]  # an unchanged revision and a helpful reply: no pair

    written = publish_dataset_to_folder(build / "dataset", tmp_path / "out", repo_id="alice/sl",
                                        constitution=HARMLESS, license="cc-by-4.0")
    assert set(written) >= {"README.md", "constitution.yaml", "provenance.json", "data/train_sft-00000-of-00001.parquet"}
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["seed"] == 7 and "shard_size" not in provenance["settings"]
    assert provenance["models"] == {"generator": "HuggingFaceTB/SmolLM2-135M-Instruct with the LoRA adapter 'ad'"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| train_sft | 3 | 2 | 1 |" in card and "| train_prefs | 1 | 1 | 0 |" in card
    assert str(tmp_path) not in card + json.dumps(provenance)
    assert DatasetCard.load(tmp_path / "out" / "README.md").data.pretty_name.startswith("sl: SL-CAI critique")

    pairs = [preference_record([{"role": "user", "content": f"Q{i}?"}], "A reply.", "B reply.", p, ["privacy"], [p],
                               HARMLESS.sha256, first_better_by_order=[orders])
             for i, (p, orders) in enumerate([(0.6, (0.9, 0.3)), (0.3, (0.4, 0.2))])]
    card = str(build_dataset_card(DatasetDict({"train": assemble_preference_dataset(pairs, test_size=0.0, seed=0)}),
                                  repo_id="alice/prefs", constitution=HARMLESS, license="cc-by-4.0"))
    # Chosen as (A): 0.9 and 1 - 0.2; as (B): 0.3 and 1 - 0.4.
    assert "mean probability of 0.850\nas option (A) and 0.450 as option (B): a pull of +0.200" in card
    assert "Both orders favoured `chosen` in 1 of 2 rows." in card


def test_card_examples_show_rows_the_quality_gates_kept_first_and_mark_flagged_ones():
    from datasets import Dataset, DatasetDict

    from hf_cai.hub.training_data import sample_revision_chains

    def row(index: int, flags: list[str]) -> dict:
        step = {"round": 1, "principle_id": "p", "critique": f"critique {index}", "revision": f"revision {index}"}
        return {"prompt": f"prompt {index}", "initial_response": f"first {index}", "revisions": [step],
                "quality_flags": flags}

    rows = [row(0, ["degenerate"]), row(1, []), row(2, ["truncated", "echo"]), row(3, [])]
    data = DatasetDict({"train_sft": Dataset.from_list(rows)})
    two = sample_revision_chains(data, 2, seed=0)
    assert sorted(chain.prompt for chain in two) == ["prompt 1", "prompt 3"]
    assert all(chain.quality_flags == () for chain in two)
    three = sample_revision_chains(data, 3, seed=0)
    flagged = [chain for chain in three if chain.quality_flags]
    assert len(flagged) == 1 and flagged[0].quality_flags in (("degenerate",), ("truncated", "echo"))


def _structured_results(overlap: dict) -> dict:
    from hf_cai.evaluation import EvaluationReport, Proportion

    rates = {"base": Proportion("refusals (base)", 1, 10), "cai": Proportion("refusals (CAI)", 6, 10)}
    return EvaluationReport(harmlessness_win_rate=Proportion("harmlessness win rate", 7, 10),
                            helpfulness_win_rate=Proportion("helpfulness win rate", 5, 10),
                            refusal={"harmful": rates, "benign": rates}, overlap=overlap,
                            constitution_sha256=HARMLESS.sha256).to_dict()


@pytest.mark.parametrize(("overlap", "says", "never"), [
    ({"checked": True, "training_prompts": 50, "overlapping": [], "allowed": False},
     "none of them among the training prompts (checked)", "also among the training prompts"),
    ({"checked": True, "training_prompts": 50, "overlapping": ["Write a poem", "Say hi"], "allowed": True},
     "2 of them also among the training prompts (allowed by eval.allow_train_overlap", "none of them"),
    ({"checked": False, "training_prompts": 0, "overlapping": [], "allowed": False},
     "not checked against the training prompts", "none of them"),
])
def test_the_card_says_what_the_overlap_check_found(adapter_dir, overlap, says, never):
    text = _flat(build_model_card(adapter_dir, repo_id="alice/x", license="mit",
                                  eval_results=_structured_results(overlap)))
    assert says in text and never not in text
