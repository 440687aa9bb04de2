"""The evaluation's results.json (which models, which artifact, the judge's quality, refusals with intervals, win
rates, principles, settings, samples), the train/eval overlap check, and the model card built from it: only this
model's own results in model-index, limitations quoting the judge's accuracy, harmful samples behind a warning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from safetensors.numpy import save_file

from hf_cai.constitution import Constitution
from hf_cai.evaluation import (
    EvaluationConfig,
    PromptOverlapError,
    builtin_eval_set,
    evaluate_models,
    select_prompts,
)
from hf_cai.evaluation.refusal import measure_phrase_classifier
from hf_cai.evaluation.verdict import with_interval
from hf_cai.hub.model_card import build_model_card
from hf_cai.pipeline.manifest import MANIFEST_FORMAT

HARMLESS = Constitution.builtin("harmless")
MODELS = {"base": "org/tiny-chat", "cai": "runs/x/dpo/final", "judge": "org/tiny-chat", "judge_is_base": True}


def _is_rate(row, count_key="refusals", keys=("n",)) -> bool:
    low, high = row["ci95"]
    return set(row) >= {"rate", "ci95", count_key, *keys} and 0.0 <= low <= (row["rate"] or 0.0) <= high <= 1.0


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, tmp_path_factory):
    """The tiny model evaluated against itself on 3 harmful and 3 benign built-in prompts, saved to a folder."""
    from hf_cai.backends import TransformersBackend

    backend = TransformersBackend(str(tiny_model_dir))
    config = EvaluationConfig(max_prompts=3, max_new_tokens=6, max_audit_prompts_per_principle=1,
                              judge_quality_items=6, num_samples=2, judge_few_shot=False)
    training = ["Write a poem about the sea.", "How do I pick a lock?"]
    report = evaluate_models(backend, backend, backend, HARMLESS, config, training_prompts=training, models=MODELS,
                             evaluated_artifact="LoRA adapter applied to org/tiny-chat")
    folder = tmp_path_factory.mktemp("eval")
    report.save(folder)
    return folder


def test_results_json_names_the_models_the_artifact_and_the_judge(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    assert results["format"] == 2 and results["constitution_sha256"] == HARMLESS.sha256
    assert results["models"] == MODELS
    assert results["evaluated_artifact"] == "LoRA adapter applied to org/tiny-chat"
    quality = results["judge_quality"]
    assert quality["n"] == 6 and quality["source"] == "measured by the evaluation"
    assert {"accuracy", "accuracy_ci95", "order_consistency", "option_mass", "near_chance", "warnings"} <= set(quality)
    assert results["eval_sets"] == [{"name": "hf-cai-eval", "source": "hf-cai", "harmful": 120, "benign": 60}]
    assert results["overlap"] == {"checked": True, "training_prompts": 2, "overlapping": [], "allowed": False}
    assert results["settings"]["max_prompts"] == 3 and results["settings"]["eval_sets"] == ["builtin"]


def test_results_json_refusals_win_rates_and_principles_have_intervals(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    for group in ("harmful", "benign"):
        entry = results["refusal"][group]
        assert entry["n"] == 3 and entry["dataset"]["type"] == "hf-cai-eval"
        for model in ("base", "cai"):
            assert _is_rate(entry[model]) and entry[model]["n"] == 3
            assert _is_rate(entry["judge"][model])
    assert "an estimate" in results["refusal"]["classifier"]
    # The phrase classifier's precision and recall against people's labels, on the held-out half of the labelled set.
    measured = results["refusal"]["phrase_classifier"]
    assert measured == measure_phrase_classifier("held_out").to_dict() and measured["split"] == "held_out"
    assert _is_rate(measured["precision"], count_key="n") and _is_rate(measured["recall"], count_key="n")
    assert measured["n"] >= 40
    assert _is_rate(results["refusal"]["harmful"]["evasive"]["cai"])
    wins = results["win_rates"]
    assert wins["helpfulness"]["prompts"] == "benign" and wins["harmlessness"]["prompts"] == "harmful"
    assert _is_rate(wins["helpfulness"], "wins") and wins["helpfulness"]["n"] == 3
    assert [row["principle_id"] for row in results["principles"]] == [p.id for p in HARMLESS.principles]
    assert all(row["n"] == 1 and _is_rate(row["cai"], "violations", keys=()) for row in results["principles"])
    names = {metric["name"] for metric in results["metrics"]}  # the flat list older readers use
    assert {"harmlessness win rate", "helpfulness win rate", "refusals of harmful requests (CAI)"} <= names
    assert results["notes"] and any("judge's accuracy was" in note for note in results["notes"])


def test_samples_mark_the_harmful_prompts(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    harmful = {p.prompt for p in builtin_eval_set().harmful()}
    assert [s["harmful"] for s in results["samples"]] == [True, True, False, False]
    assert all((s["prompt"] in harmful) == s["harmful"] for s in results["samples"])
    assert all(set(s) == {"prompt", "harmful", "category", "base", "cai"} for s in results["samples"])
    assert (evaluated / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_prompts_overlapping_training_prompts_stop_the_evaluation():
    training = [[{"role": "user", "content": "How do I pick my neighbour's lock?"}], "Tell me a joke"]
    config = EvaluationConfig(harmful_prompts=["How do I pick my neighbour’s lock", "Other request"],
                              helpful_prompts=["tell me a JOKE!"])
    with pytest.raises(PromptOverlapError, match="eval.allow_train_overlap") as stopped:
        select_prompts(config, training)
    assert len(stopped.value.overlap) == 2
    allowed = select_prompts(EvaluationConfig(**{**config.to_dict(), "allow_train_overlap": True}), training)
    assert allowed.overlap["checked"] and len(allowed.overlap["overlapping"]) == 2
    assert select_prompts(config, None).overlap["checked"] is False  # nothing to check against


def test_the_eval_stage_checks_the_runs_training_prompts_before_loading_any_model(tmp_path):
    from hf_cai.builders import load_prompts, prompt_text
    from hf_cai.pipeline import RecipeConfig
    from hf_cai.pipeline.context import RunContext
    from hf_cai.pipeline.stages.evaluate import run_eval, trained_prompts

    first = prompt_text(load_prompts("builtin:red_team")[0])
    recipe = RecipeConfig(run_dir=str(tmp_path / "run"), max_prompts=4, eval={"harmful_prompts": [first]},
                          sl_data={"num_helpful_prompts": 2})
    context = RunContext(recipe)
    assert len(trained_prompts(context)) == 6  # four red-team prompts and two helpful ones
    with pytest.raises(PromptOverlapError, match="1 of"):
        run_eval(context, tmp_path / "eval")  # no model was trained: the check comes first
    # The default, the built-in evaluation set, does not overlap the built-in training prompts.
    everything = RecipeConfig(run_dir=str(tmp_path / "run"), max_prompts=None, sl_data={})
    default = EvaluationConfig(max_prompts=None)
    assert select_prompts(default, trained_prompts(RunContext(everything))).overlap["overlapping"] == []


def test_the_eval_stage_names_the_gguf_file_the_base_weights_came_from(tiny_gguf_file, gguf_cache, tmp_path):
    from hf_cai.gguf import weights_source
    from hf_cai.pipeline import RecipeConfig
    from hf_cai.pipeline.context import RunContext
    from hf_cai.pipeline.stages.evaluate import evaluated_artifact, model_ids

    final = tmp_path / "dpo" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    gguf = RunContext(RecipeConfig(run_dir=str(tmp_path / "gguf"), model=str(tiny_gguf_file),
                                   model_hub_id="org/tiny-chat", load_in_4bit=False))
    source = weights_source(tiny_gguf_file)
    assert model_ids(gguf, final)["base_weights"] == source and source["quantization"] == "Q4_1"
    assert evaluated_artifact(gguf, final) == (
        f"LoRA adapter applied to the weights of tiny-chat.Q4_1.gguf (Q4_1 GGUF file of org/tiny-chat, sha256 "
        f"{source['sha256']}) de-quantised to float32")
    plain = RunContext(RecipeConfig(run_dir=str(tmp_path / "plain"), model="tiny", load_in_4bit=False))
    assert model_ids(plain, final)["base_weights"] is None
    assert evaluated_artifact(plain, final) == "LoRA adapter applied to hf-cai/tiny-chat"


def _run_with_results(tmp_path: Path, results_dir: Path) -> Path:
    """A run directory with a final DPO adapter and the evaluation's folder."""
    run = tmp_path / "run"
    final = run / "dpo" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/tiny-chat"}))
    save_file({"lora_A": np.zeros((2, 2), dtype=np.float32)}, str(final / "adapter_model.safetensors"))
    (final / "tokenizer.json").write_text("{}")
    HARMLESS.save(final / "constitution.yaml")
    (final / "cai_training.json").write_text(json.dumps({"stage": "dpo", "base_model": "org/tiny-chat"}))
    quality = {"truncated": 2, "degenerate": 1, "echo": 0, "too_short": 0, "role_header": 0, "flagged": 3, "kept": 7,
               "total": 10}  # the quality gates' counts, as the sl_data stage records them in the manifest
    stages = {"sl_data": {"status": "done", "metrics": {"quality": quality}}}
    (run / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "stages": stages}))
    (run / "eval").mkdir()
    for name in ("results.json", "chart.png"):
        (run / "eval" / name).write_bytes((results_dir / name).read_bytes())
    return run


def test_model_index_holds_only_this_models_own_results(evaluated, tmp_path):
    run = _run_with_results(tmp_path, evaluated)
    card = build_model_card(run, repo_id="alice/tiny-cai", license="mit")
    card.save(tmp_path / "README.md")
    entries = ModelCard.load(tmp_path / "README.md").data.eval_results
    results = json.loads((evaluated / "results.json").read_text())
    assert [(e.dataset_split, e.metric_type) for e in entries] == [("harmful", "refusal_rate"), ("benign", "refusal_rate")]
    assert [e.metric_value for e in entries] == [round(results["refusal"][g]["cai"]["rate"], 4) for g in ("harmful", "benign")]
    assert all(e.dataset_type == "hf-cai-eval" and "/" not in e.dataset_type for e in entries)
    index = (tmp_path / "README.md").read_text().split("---")[1]
    model_index = index[index.index("model-index"):]
    assert "base" not in model_index.lower() and "accuracy" not in model_index and "win" not in model_index


def test_card_text_compares_with_the_base_and_quotes_the_judge_in_its_limitations(evaluated, tmp_path):
    run = _run_with_results(tmp_path, evaluated)
    results = json.loads((evaluated / "results.json").read_text())
    text = str(build_model_card(run, repo_id="alice/tiny-cai", license="mit", merged=True))
    quality = results["judge_quality"]
    low, high = quality["accuracy_ci95"]
    quoted = f"The judge's accuracy was {quality['accuracy']:.0%} [{low:.0%}, {high:.0%}] on 6 calibration items"
    limitations = text[text.index("## Limitations"):text.index("## Citation")]
    assert quoted in limitations and "3 harmful and 3 benign" in limitations
    # The phrase rates are shown with the classifier's measured precision and recall, not as a bound.
    precision = with_interval(results["refusal"]["phrase_classifier"]["precision"])
    assert "lower bound" not in text and f"an estimate: precision {precision}" in " ".join(text.split())
    assert "| refusal-phrase classifier | harmful (should refuse) |" in text and "| AI judge | benign" in text
    assert "![Refusal rates" in text and "(eval/chart.png)" in text
    assert "measured on the LoRA adapter applied to org/tiny-chat; the published checkpoint is their merge" in text
    assert "| all | 10 | 7 | 3 | 2 | 1 | 0 | 0 | 0 |" in text  # the quality gates' counts, from the manifest


def test_harmful_samples_sit_inside_the_content_warning_block(evaluated, tmp_path):
    run = _run_with_results(tmp_path, evaluated)
    text = str(build_model_card(run, repo_id="alice/tiny-cai", license="mit"))
    results = json.loads((evaluated / "results.json").read_text())
    blocks = re.findall(r"<details>\n<summary>(.*?)</summary>(.*?)</details>", text, re.S)
    warned = [body for summary, body in blocks if "content warning" in summary]
    assert len(warned) == 1 and "**Content warning:**" in warned[0]
    for sample in results["samples"]:
        first_line = sample["prompt"].splitlines()[0]
        inside = first_line in warned[0]
        assert inside == sample["harmful"], sample["prompt"]
    outside = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
    assert not any(s["prompt"].splitlines()[0] in outside for s in results["samples"] if s["harmful"])


def test_publishing_to_a_folder_ships_the_chart_the_card_embeds(evaluated, tmp_path):
    from hf_cai.pipeline import RecipeConfig
    from hf_cai.pipeline.context import RunContext
    from hf_cai.pipeline.stages.publish import run_publish

    run = _run_with_results(tmp_path, evaluated)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["dpo"] = {"status": "done", "outputs": {"model": "dpo/final"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    folder = tmp_path / "repo"
    recipe = RecipeConfig(run_dir=str(run), model_hub_id="org/tiny-chat", card={"license": "mit"},
                          publish={"folder": str(folder)})
    (run / "publish").mkdir()
    result = run_publish(RunContext(recipe), run / "publish")
    assert result.metrics["files"] >= 6
    assert (folder / "eval" / "chart.png").read_bytes() == (evaluated / "chart.png").read_bytes()
    assert json.loads((folder / "eval" / "results.json").read_text())["format"] == 2
    assert "](eval/chart.png)" in (folder / "README.md").read_text()


def test_results_json_counts_the_replies_the_quality_gates_would_flag(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    for model in ("base", "cai"):
        row = results["reply_quality"][model]
        assert row["n"] == 6 and _is_rate(row, count_key="flagged")
        assert sum(row["counts"].values()) >= row["flagged"]


def test_verdict_says_when_the_cai_models_replies_are_botched_text():
    from hf_cai.evaluation.verdict import limitation_lines, verdict_lines

    def results(cai_flagged: int, base_flagged: int) -> dict:
        def row(flagged):
            return {"rate": flagged / 8, "ci95": [0.0, 1.0], "flagged": flagged, "n": 8, "counts": {"echo": flagged}}

        return {"reply_quality": {"base": row(base_flagged), "cai": row(cai_flagged)}}

    worse = [line for line in verdict_lines(results(6, 1)) if "quality gates" in line]
    assert worse and worse[0].startswith("6 of 8 of the CAI model's replies") and "echo 6" in worse[0]
    assert any("quality gates" in line for line in limitation_lines(results(6, 1)))
    assert not [line for line in verdict_lines(results(1, 1)) if "quality gates" in line]


def test_without_the_chart_extra_results_json_is_written_and_the_chart_names_the_extra(monkeypatch, tmp_path, caplog):
    from hf_cai.evaluation.results import EvaluationReport
    from hf_cai.stats import Proportion

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if matplotlib were not installed
    report = EvaluationReport(Proportion("harmlessness", 2, 3), Proportion("helpfulness", 1, 3))
    with caplog.at_level("WARNING", logger="hf_cai.evaluation.results"):
        path = report.save(tmp_path)
    assert json.loads(path.read_text())["format"] == 2
    assert not (tmp_path / "chart.png").exists()
    assert "hf-cai[chart]" in caplog.text
    with pytest.raises(ImportError, match=re.escape("pip install 'hf-cai[chart]'")):
        report.plot(tmp_path / "chart.png")
