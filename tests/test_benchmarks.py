"""Standard benchmarks through lm-evaluation-harness: the base and the CAI model (the adapter through lm-eval's
``peft=``) on local task files in the formats of TruthfulQA MC2 and BBQ (tests/data/lm_eval_tasks, items written for
these tests), one paired table with standard errors, and where it goes: the ``eval`` command's output,
``results.json``, the run summary's notes, the model card and its ``model-index``."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from hf_cai.constitution import Constitution
from hf_cai.evaluation.benchmarks import (
    BenchmarkConfig,
    benchmark_lines,
    format_difference,
    format_value,
    paired_table,
    run_benchmarks,
    task_manager,
)
from hf_cai.evaluation.card_section import benchmark_index_entries
from hf_cai.pipeline import Pipeline, RecipeError, load_recipe

pytest.importorskip("lm_eval")

TASKS = Path(__file__).parent / "data" / "lm_eval_tasks"
LIMIT = 6  # of the 8 items of each local task


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model with random (not zero) weights, so it changes the model's scores."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    folder = tmp_path_factory.mktemp("tiny-adapter")
    adapted.save_pretrained(folder)
    return folder


@pytest.fixture
def in_task_folder(monkeypatch):
    """The task files name their data relative to the folder lm-eval runs in, as lm-eval reads them."""
    monkeypatch.chdir(TASKS)


def _check_paired_row(row: dict, n: int) -> None:
    for side in ("base", "cai"):
        assert 0.0 <= row[side]["value"] <= 1.0 and row[side]["stderr"] >= 0.0
    difference = row["difference"]
    # 0 when the adapter changes no item's score (the tiny model often picks the same BBQ answers with and without)
    assert difference["paired"] and difference["n"] == n and difference["stderr"] >= 0.0
    assert math.isclose(difference["value"], row["cai"]["value"] - row["base"]["value"])


@pytest.mark.usefixtures("in_task_folder", "one_torch_thread")
def test_eval_command_prints_base_and_cai_with_standard_errors_and_the_difference(
    tiny_model_dir, tiny_adapter, tmp_path, capsys
):
    from hf_cai.cli import main

    status = main(["eval", "--base", str(tiny_model_dir), "--model", str(tiny_adapter),
                   "--benchmarks", "local_truthfulqa_mc2", "--include-path", str(TASKS),
                   "--benchmark-limit", str(LIMIT), "--benchmarks-only", "--output-dir", str(tmp_path)])
    assert status == 0
    table = json.loads((tmp_path / "benchmarks.json").read_text())
    assert table["lm_eval_version"] and table["models"]["cai"]["peft"] == str(tiny_adapter)
    (task,) = table["tasks"]
    assert (task["task"], task["n"], task["n_total"], task["num_fewshot"]) == ("local_truthfulqa_mc2", LIMIT, 8, 0)
    (row,) = task["metrics"]
    assert row["metric"] == "acc" and row["higher_is_better"] is True
    _check_paired_row(row, LIMIT)
    assert row["cai"]["value"] != row["base"]["value"]  # the adapter was applied
    printed = (f"local_truthfulqa_mc2 acc (n={LIMIT}, 0-shot): base {format_value(row['base'])}, "
               f"CAI {format_value(row['cai'])}, difference {format_difference(row['difference'])}")
    assert printed in capsys.readouterr().out


@pytest.mark.parametrize(("arguments", "message"), [
    (["--benchmarks", "arc_easy"], "--benchmarks compares the CAI model with its base: give --model"),
    (["--model", "m", "--include-path", str(TASKS)], "name the lm-eval tasks to run: --benchmarks TASK[,TASK]"),
    (["--model", "m", "--benchmarks", "arc_easy", "--benchmark-limit", "0"], "benchmarks.limit must be an integer"),
])
def test_the_eval_command_refuses_incomplete_benchmark_options_before_loading_a_model(arguments, message, capsys):
    from hf_cai.cli import main

    assert main(["eval", "--base", "no-such-model", *arguments]) == 2
    assert message in capsys.readouterr().err


def _run_dir(tmp_path: Path, tiny_model_dir: Path, tiny_adapter: Path) -> Path:
    """A run directory whose DPO stage finished with ``tiny_adapter`` as its model."""
    import shutil

    from hf_cai.pipeline.manifest import MANIFEST_FORMAT

    run = tmp_path / "run"
    final = run / "dpo" / "final"
    shutil.copytree(tiny_adapter, final)
    config = json.loads((final / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (final / "adapter_config.json").write_text(json.dumps(config))
    Constitution.builtin("harmless").save(final / "constitution.yaml")
    (final / "cai_training.json").write_text(json.dumps({"stage": "dpo", "base_model": "org/tiny-chat"}))
    stages = {"dpo": {"status": "done", "outputs": {"model": "dpo/final"}}}
    (run / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "stages": stages}))
    return run


@pytest.mark.usefixtures("in_task_folder", "one_torch_thread")
def test_the_eval_stage_puts_the_benchmarks_in_results_the_notes_the_card_and_model_index(
    tiny_model_dir, tiny_adapter, tmp_path
):
    from hf_cai.hub.model_card import build_model_card
    from hf_cai.pipeline import RecipeConfig
    from hf_cai.pipeline.context import RunContext
    from hf_cai.pipeline.stages.evaluate import run_eval

    run = _run_dir(tmp_path, tiny_model_dir, tiny_adapter)
    benchmarks = {"tasks": ["local_truthfulqa_mc2", "local_bbq"], "limit": LIMIT, "batch_size": 4,
                  "include_path": str(TASKS)}
    recipe = RecipeConfig(
        run_dir=str(run), model=str(tiny_model_dir), model_hub_id="org/tiny-chat", load_in_4bit=False, max_prompts=4,
        helpful_prompts=None, card={"license": "mit"},
        eval={"max_prompts": 1, "max_new_tokens": 2, "judge_refusals": False, "principle_audit": False,
              "judge_quality_items": 0, "judge_few_shot": False, "num_samples": 1, "benchmarks": benchmarks},
    )
    result = run_eval(RunContext(recipe), run / "eval")

    results = json.loads((run / "eval" / "results.json").read_text())
    table = results["benchmarks"]
    assert [task["task"] for task in table["tasks"]] == ["local_truthfulqa_mc2", "local_bbq"]
    assert table["settings"]["limit"] == LIMIT and "the same for both models" in table["settings"]["items"]
    assert table["models"]["cai"] == {"pretrained": str(tiny_model_dir), "peft": str(run / "dpo" / "final"),
                                      "dtype": table["models"]["base"]["dtype"], "load_in_4bit": False}
    for task in table["tasks"]:
        assert task["dataset"]["local"] and task["n"] == LIMIT
        _check_paired_row(task["metrics"][0], LIMIT)
    assert set(benchmark_lines(table)) <= set(result.notes)  # the run summary prints the stage's notes

    card_path = tmp_path / "README.md"
    build_model_card(run, repo_id="alice/tiny-cai", license="mit").save(card_path)
    text = card_path.read_text()
    section = text[text.index("### Standard benchmarks"):text.index("### The judge")]
    for task in table["tasks"]:
        row = task["metrics"][0]
        cells = [task["task"], "acc", str(LIMIT), "0", format_value(row["base"]), format_value(row["cai"]),
                 format_difference(row["difference"]), "local task file"]
        assert "| " + " | ".join(cells) + " |" in section
    entries = [e for e in ModelCard.load(card_path).data.eval_results if e.task_name.startswith("local_")]
    assert [(e.task_name, e.dataset_type, e.dataset_split, e.metric_type) for e in entries] == [
        ("local_truthfulqa_mc2", "local_truthfulqa_mc2", "validation", "acc"),
        ("local_bbq", "local_bbq", "test", "acc"),
    ]
    assert all("local lm-eval task, not a Hub dataset" in e.dataset_name for e in entries)
    assert [e.metric_value for e in entries] == [round(t["metrics"][0]["cai"]["value"], 4) for t in table["tasks"]]


def _run_output(configs: dict, scores: dict, reported: dict, stderrs: dict) -> dict:
    """A run as :func:`run_benchmarks` reduces lm-eval's output: ``scores[task][metric]`` per item (doc ids 0..n-1),
    ``reported[task][metric]`` and ``stderrs[task][metric]`` the aggregates lm-eval reports."""
    results = {task: {"alias": task, **{f"{m},none": v for m, v in values.items()},
                      **{f"{m}_stderr,none": v for m, v in stderrs[task].items()}} for task, values in reported.items()}
    per_item = {task: [{"doc_id": i, "doc_hash": f"h{i}", "filter": "none",
                        "scores": {m: values[i] for m, values in metrics.items()}}
                       for i in range(len(next(iter(metrics.values()))))] for task, metrics in scores.items()}
    return {"results": results, "configs": configs, "versions": {task: 1.0 for task in reported},
            "n-shot": {task: 0 for task in reported}, "higher_is_better": {},
            "n-samples": {task: {"original": 100, "effective": 5} for task in reported},
            "per_item": per_item, "lm_eval_version": "0.4.13"}


def test_the_difference_is_paired_over_the_same_items_when_the_metric_is_a_mean_of_them():
    base_items = [0.2, 0.4, 0.6, 0.8, 0.5]
    cai_items = [0.3, 0.5, 0.8, 0.8, 0.6]
    other = {"score": [1, 0, 1, 1, 0]}  # per-item values whose mean is not the reported `score`
    configs = {"t": {"output_type": "multiple_choice", "dataset_path": "json", "test_split": "test"}}
    mean = statistics.fmean
    base = _run_output(configs, {"t": {"acc": base_items, **other}},
                       {"t": {"acc": mean(base_items), "bias": 0.10, "score": 0.50}},
                       {"t": {"acc": 0.11, "bias": "N/A", "score": 0.04}})
    cai = _run_output(configs, {"t": {"acc": cai_items, **other}},
                      {"t": {"acc": mean(cai_items), "bias": 0.05, "score": 0.55}},
                      {"t": {"acc": 0.10, "bias": "N/A", "score": 0.03}})
    table = paired_table(base, cai, settings={}, models={})
    rows = {row["metric"]: row for row in table["tasks"][0]["metrics"]}
    differences = [c - b for b, c in zip(base_items, cai_items)]
    paired = rows["acc"]["difference"]
    assert paired["paired"] and paired["n"] == 5
    assert math.isclose(paired["stderr"], statistics.stdev(differences) / math.sqrt(5))
    assert paired["stderr"] < math.hypot(0.11, 0.10)  # the pairing removes what the two models share per item
    # `score` is not the mean of per-item values (lm-eval aggregated it another way): the unpaired formula.
    assert not rows["score"]["difference"]["paired"]
    assert math.isclose(rows["score"]["difference"]["stderr"], math.hypot(0.04, 0.03))
    # lm-eval gives no standard error for `bias`: the difference has none either, and says so.
    assert rows["bias"]["base"]["stderr"] is None and rows["bias"]["difference"]["stderr"] is None
    assert format_difference(rows["bias"]["difference"]) == "-0.050 (no standard error)"

    # Other items scored for the CAI model: no pairing.
    cai["per_item"]["t"][0]["doc_hash"] = "another item"
    unpaired = paired_table(base, cai, settings={}, models={})["tasks"][0]["metrics"][0]["difference"]
    assert not unpaired["paired"] and math.isclose(unpaired["stderr"], math.hypot(0.11, 0.10))


@pytest.fixture(scope="module")
def lm_eval_tasks():
    """lm-eval's own task index (its task YAML files; no data is read)."""
    return task_manager(BenchmarkConfig()).task_index


def test_real_tasks_go_into_model_index_under_the_dataset_ids_their_lm_eval_tasks_read(lm_eval_tasks):
    names = ["truthfulqa_mc2", "bbq", "toxigen", "arc_easy"]
    configs = {name: lm_eval_tasks[name].cfg for name in names}
    reported = {name: {"acc": 0.5} for name in names}
    stderrs = {name: {"acc": 0.05} for name in names}
    scores = {name: {"acc": [0.5] * 5} for name in names}
    base = _run_output(configs, scores, reported, stderrs)
    cai = _run_output(configs, scores, {name: {"acc": 0.6} for name in names}, stderrs)
    entries = benchmark_index_entries(paired_table(base, cai, settings={}, models={}))
    assert [(e["dataset_type"], e.get("dataset_config"), e["dataset_split"], e["metric_type"]) for e in entries] == [
        ("truthfulqa/truthful_qa", "multiple_choice", "validation", "mc2"),
        ("oskarvanderwal/bbq", "All", "test", "acc"),
        ("skg/toxigen-data", "annotated", "test", "acc"),
        ("allenai/ai2_arc", "ARC-Easy", "test", "acc"),
    ]
    assert all(e["metric_value"] == 0.6 and e["dataset_args"] == {"num_few_shot": 0} for e in entries)


def test_an_unknown_task_is_refused_with_the_closest_name_before_the_run_trains(lm_eval_tasks, tmp_path):
    with pytest.raises(ValueError, match="no task 'truthfulqa_mc3' \\(did you mean 'truthfulqa_mc2'\\?\\)"):
        task_manager(BenchmarkConfig(tasks=["truthfulqa_mc3"]))
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"),
                                           "eval": {"benchmarks": {"tasks": ["arc_easy", "truthfulqa_mc3"]}}}))
    with pytest.raises(RecipeError, match="eval.benchmarks.tasks: lm-eval has no task 'truthfulqa_mc3'"):
        Pipeline(load_recipe(recipe_path)).run()
    assert not (tmp_path / "run" / "sl_data").exists()


def test_a_changed_local_task_file_reruns_the_evaluation_and_its_bytecode_cache_does_not(tmp_path):
    import shutil

    from hf_cai.pipeline import RecipeConfig

    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks, ignore=shutil.ignore_patterns("__pycache__"))
    recipe = RecipeConfig(run_dir=str(tmp_path / "run"),
                          eval={"benchmarks": {"tasks": ["local_bbq"], "include_path": str(tasks)}})
    before = Pipeline(recipe).fingerprint("eval")
    (tasks / "__pycache__").mkdir()  # written when lm-eval imports the task's Python functions
    (tasks / "__pycache__" / "mc2.cpython-311.pyc").write_bytes(b"bytecode")
    assert Pipeline(recipe).fingerprint("eval") == before
    items = tasks / "bbq_items.jsonl"
    items.write_text(items.read_text().replace("Can't tell", "Cannot tell"))
    assert Pipeline(recipe).fingerprint("eval") != before


@pytest.mark.parametrize(("benchmarks", "message"), [
    ({"task": ["arc_easy"]}, "unknown key 'task'; did you mean 'benchmarks.tasks'"),
    ({"tasks": "arc_easy", "limit": 0}, "eval.benchmarks.limit must be an integer >= 1"),
    ({"tasks": "arc_easy", "batch_size": "big"}, "eval.benchmarks.batch_size must be a positive integer or 'auto'"),
    ({"tasks": "arc_easy", "include_path": "no-such-folder"}, "'no-such-folder' is not a folder"),
])
def test_bad_benchmark_settings_are_refused_when_the_recipe_is_read(tmp_path, benchmarks, message):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({"eval": {"benchmarks": benchmarks}}))
    with pytest.raises(RecipeError, match=message.replace("(", "\\(")):
        load_recipe(recipe_path)


@pytest.mark.usefixtures("in_task_folder", "one_torch_thread")
def test_a_4bit_run_scores_both_models_loaded_as_the_run_loaded_them(tiny_model_dir, tiny_adapter):
    config = BenchmarkConfig(tasks=["local_bbq"], limit=4, batch_size=4, include_path=str(TASKS))
    table = run_benchmarks(str(tiny_model_dir), str(tiny_adapter), config, load_in_4bit=True)
    assert table["models"]["base"]["load_in_4bit"] and table["models"]["cai"]["peft"] == str(tiny_adapter)
    (row,) = table["tasks"][0]["metrics"]
    assert row["difference"]["paired"] and row["difference"]["n"] == 4
