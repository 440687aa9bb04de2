"""The pipeline does not fool its user: the SL-CAI quality gates and the judge check, wired into the stages.

One run of the first three stages on the tiny model (warmed up, so that some replies end by themselves and some run
out of tokens) is shared by the tests; the tests that change its settings work on copies of it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from hf_cai.pipeline import Pipeline, PipelineError, RecipeError, format_summary, load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("exact_float32")]

RECIPE = {
    "model": "tiny",
    # Warmed up on the built-in demonstrations, the tiny model ends some replies within 48 tokens and not others:
    # a mix of kept and truncated rows, made deterministic by the seed.
    "tiny_pretrain_steps": 150,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": "builtin:helpful",
    "max_prompts": 6,
    "qlora_profile": "cpu",
    "load_in_4bit": False,
    "seed": 3,
    "stages": ["sl_data", "sft", "pref_data"],
    "sl_data": {"rounds": 1, "max_new_tokens": 48, "few_shot": False, "shard_size": 4, "test_size": 0.25,
                "num_helpful_prompts": 2},
    "sl_quality": {"min_kept_share": 0.2},
    "sft": {"max_steps": 4, "per_device_train_batch_size": 1, "learning_rate": 0.002, "save_steps": 2},
    "pref_data": {"max_new_tokens": 8, "few_shot": False, "shard_size": 4, "test_size": 0.25},
    "judge_check": {"max_items": 12},
}


def _pipeline(run_dir: Path, **changes) -> Pipeline:
    overrides = {**json.loads(json.dumps(RECIPE)), "run_dir": str(run_dir)}
    for key, value in changes.items():
        section, _, setting = key.partition("__")
        if setting:
            overrides[section] = {**overrides.get(section, {}), setting: value}
        else:
            overrides[key] = value
    return Pipeline(load_recipe(overrides=overrides))


def _stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def _splits(run_dir: Path) -> dict:
    from datasets import load_from_disk

    return load_from_disk(str(run_dir / "sl_data" / "dataset"))


def _shards(run_dir: Path, stage: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run_dir / stage / "shards").iterdir())}


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture(scope="module")
def run(tmp_path_factory, exact_float32, one_torch_thread) -> tuple[Path, str]:
    """sl_data → sft → pref_data, and the summary printed at its end."""
    run_dir = tmp_path_factory.mktemp("quality") / "run"
    pipeline = _pipeline(run_dir)
    results = pipeline.run()
    return run_dir, format_summary(pipeline, results)


def test_sl_data_records_the_gates_in_the_manifest_the_notes_a_file_and_a_column(run):
    from hf_cai.builders import QUALITY_FLAGS, gate_sl_dataset
    from hf_cai.constitution import Constitution

    run_dir, summary = run
    record = _stages(run_dir)["sl_data"]
    quality = json.loads((run_dir / record["outputs"]["quality"]).read_text())
    counts = record["metrics"]["quality"]
    assert set(counts) == {*QUALITY_FLAGS, "flagged", "kept", "total"}
    assert counts["total"] == record["metrics"]["rows"] == quality["counts"]["total"]
    # The recipe's settings make a mix: the test would prove nothing if every row passed or none did.
    assert 0 < counts["kept"] < counts["total"], counts
    assert counts == quality["counts"]
    assert record["notes"] == quality["summary"]
    assert record["notes"][0].startswith(f"SL-CAI quality gates: {counts['kept']} of {counts['total']} rows kept")
    assert f"sl_data: {record['notes'][0]}" in summary

    # Every split carries its rows' flags, the ones the gates give the saved rows.
    splits = _splits(run_dir)
    harmless = Constitution.resolve("harmless")
    for name, split in splits.items():
        flags = split["quality_flags"]
        assert flags == gate_sl_dataset(split.remove_columns("quality_flags"), harmless).flags, name
        assert quality["splits"][name]["counts"]["total"] == len(flags)
        assert quality["splits"][name]["counts"]["flagged"] == sum(1 for f in flags if f)


def test_sft_trains_only_on_the_rows_the_gates_kept(run):
    run_dir, summary = run
    train = _splits(run_dir)["train_sft"]
    kept = sum(1 for flags in train["quality_flags"] if not flags)
    record = _stages(run_dir)["sft"]
    assert record["metrics"]["train_rows"] == kept and record["metrics"]["train_rows_total"] == len(train)
    assert record["metrics"]["steps"] == 4
    assert record["notes"][0].startswith(f"trained on {kept} of {len(train)} train_sft rows")
    assert f"sft: trained on {kept} of {len(train)}" in summary
    # The trainer's own count: 4 steps of one row each make 4 / kept epochs only when it saw the kept rows alone.
    state = json.loads((run_dir / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(4 / kept)


def test_pref_data_measures_the_judge_before_labelling(run):
    run_dir, summary = run
    record = _stages(run_dir)["pref_data"]
    report = json.loads((run_dir / record["outputs"]["judge_quality"]).read_text())
    metrics = record["metrics"]
    assert report["n"] == 12 and report["sources"] == {"builtin": 12}
    assert metrics["judge_accuracy"] == pytest.approx(report["accuracy"], abs=1e-4)
    assert metrics["judge_accuracy_ci95"] == pytest.approx(report["accuracy_ci95"], abs=1e-4)
    assert metrics["order_consistency"] == pytest.approx(report["order_consistency"], abs=1e-4)
    assert metrics["option_mass"] == pytest.approx(report["option_mass"], abs=1e-4)
    assert metrics["pairs"] > 0
    # A tiny random judge: its figures come with plain warnings, in the notes and the summary.
    assert record["notes"][0].startswith("judge check: judge accuracy")
    assert report["warnings"] and record["notes"][1:] == report["warnings"]
    assert "not distinguishable from chance" in summary or "point the wrong way" in summary


def test_a_judge_below_min_judge_accuracy_stops_the_run_before_labelling(run, tmp_path, caplog):
    run_dir = _copy(run[0], tmp_path)
    shards = _shards(run_dir, "pref_data")
    pipeline = _pipeline(run_dir, judge_check__min_judge_accuracy=0.99)
    with pytest.raises(PipelineError) as raised:
        pipeline.run()
    message = str(raised.value)
    report = json.loads((run_dir / "pref_data" / "judge_quality.json").read_text())
    accuracy = f"{report['accuracy']:.0%} [{report['accuracy_ci95'][0]:.0%}, {report['accuracy_ci95'][1]:.0%}]"
    assert "stage 'pref_data' stopped before labelling" in message
    assert f"accuracy on 12 judge calibration items was {accuracy}, below min_judge_accuracy=0.99" in message
    assert str(run_dir / "pref_data" / "judge_quality.json") in message
    # Nothing was labelled: the old dataset went with the old settings, and no shard was touched.
    assert not (run_dir / "pref_data" / "dataset").exists()
    assert _shards(run_dir, "pref_data") == shards
    stages = _stages(run_dir)
    assert stages["pref_data"]["status"] == "running" and stages["sft"]["status"] == "done"


def test_too_few_kept_rows_stop_sft_and_a_lower_min_kept_share_resumes_without_generating(run, tmp_path, caplog):
    run_dir = _copy(run[0], tmp_path)
    shards = _shards(run_dir, "sl_data")
    counts = _stages(run_dir)["sl_data"]["metrics"]["quality"]
    train = _splits(run_dir)["train_sft"]
    kept = sum(1 for flags in train["quality_flags"] if not flags)
    with pytest.raises(PipelineError) as raised:
        _pipeline(run_dir, sl_quality__min_kept_share=0.95).run()
    message = str(raised.value)
    assert message.startswith("stage 'sft' stopped before training: SL-CAI quality gates kept only ")
    assert f"kept only {kept} of {len(train)} rows" in message and "less than min_kept_share 95%" in message
    assert "max_new_tokens" in message and "exclude_flagged: false" in message
    # sl_data ran again for its new settings from its shards, and its outputs stay for the next try.
    stages = _stages(run_dir)
    assert stages["sl_data"]["status"] == "done" and stages["sft"]["status"] == "running"
    assert stages["sl_data"]["metrics"]["quality"] == counts
    assert (run_dir / "sl_data" / "dataset").is_dir() and (run_dir / "sl_data" / "quality.json").is_file()
    assert _shards(run_dir, "sl_data") == shards

    caplog.clear()
    with caplog.at_level(logging.INFO):
        _pipeline(run_dir, sl_quality__min_kept_share=0.1).run(until="sft")
    assert "resuming: 2 of 2 shards already built" in caplog.text
    assert _shards(run_dir, "sl_data") == shards
    stages = _stages(run_dir)
    assert stages["sft"]["status"] == "done" and stages["sft"]["metrics"]["train_rows"] == kept


def test_when_the_gates_leave_no_row_sft_says_so(run, tmp_path):
    run_dir = _copy(run[0], tmp_path)
    # Every row is too short for 1000 words; min_kept_share 0 lets that through to the empty-training check.
    with pytest.raises(PipelineError, match="the quality gates left none of the") as raised:
        _pipeline(run_dir, sl_quality__min_words=1000, sl_quality__min_kept_share=0.0).run(until="sft")
    assert "exclude_flagged: false" in str(raised.value)
    counts = _stages(run_dir)["sl_data"]["metrics"]["quality"]
    assert counts["too_short"] == counts["total"] and counts["kept"] == 0


def test_exclude_flagged_false_trains_on_every_row_and_still_counts(run, tmp_path):
    run_dir = _copy(run[0], tmp_path)
    _pipeline(run_dir, sl_quality__exclude_flagged=False).run(until="sft")
    stages = _stages(run_dir)
    train = _splits(run_dir)["train_sft"]
    assert stages["sft"]["metrics"]["train_rows"] == len(train)
    assert "(sl_quality.exclude_flagged: false)" in stages["sft"]["notes"][0]
    assert stages["sl_data"]["metrics"]["quality"]["flagged"] > 0


def test_the_saved_sl_data_with_its_flags_column_still_trains_with_dpo(run, tmp_path):
    """The quality_flags column rides along in every split: TRL's trainers ignore it (SFT is run by the pipeline)."""
    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer

    run_dir = run[0]
    prefs = _splits(run_dir)["train_prefs"]
    assert "quality_flags" in prefs.column_names and len(prefs)
    args = CAIDPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1,
                        report_to="none", save_strategy="no", bf16=False, load_in_4bit=False, qlora_profile="cpu")
    trainer = CAIDPOTrainer(model=str(run_dir / "sft" / "final"), args=args, train_dataset=prefs,
                            processing_class=load_tokenizer(run_dir / "sft" / "final"))
    assert trainer.train().global_step == 1


def test_dataset_cards_built_from_the_run_folder_show_the_quality_and_the_judge(run):
    from hf_cai.constitution import Constitution
    from hf_cai.hub import build_dataset_card

    run_dir = run[0]
    harmless = Constitution.resolve("harmless")
    counts = _stages(run_dir)["sl_data"]["metrics"]["quality"]
    sl = str(build_dataset_card(run_dir / "sl_data" / "dataset", repo_id="me/sl", constitution=harmless,
                                license="cc-by-4.0"))
    assert "## Quality" in sl and "## Judge quality" not in sl
    passed = counts["total"] - counts["flagged"]
    assert f"**{passed} of {counts['total']} SFT rows" in sl
    assert f"| `truncated` | {counts['truncated']} |" in sl
    assert "The flagged rows were left out of supervised fine-tuning." in sl

    report = json.loads((run_dir / "pref_data" / "judge_quality.json").read_text())
    prefs = str(build_dataset_card(run_dir / "pref_data" / "dataset", repo_id="me/prefs", constitution=harmless,
                                   license="cc-by-4.0"))
    assert "## Judge quality" in prefs and "## Quality\n" not in prefs
    low, high = report["accuracy_ci95"]
    assert f"| Accuracy | {report['accuracy']:.0%} [{low:.0%}, {high:.0%}] |" in prefs
    assert f"> **Warning:** {report['warnings'][0]}." in prefs


# ----------------------------------------------------------------------------- the recipe
def test_unknown_keys_of_the_new_sections_name_the_closest_valid_one(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("sl_quality:\n  min_word: 3\n")
    with pytest.raises(RecipeError, match="unknown key 'sl_quality.min_word'; did you mean 'min_words'"):
        load_recipe(path)
    path.write_text("judge_check:\n  min_judge_acuracy: 0.6\n")
    with pytest.raises(RecipeError, match="unknown key 'judge_check.min_judge_acuracy'; did you mean 'min_judge_accuracy'"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="'judge_check' has no setting 'max_item'; did you mean 'judge_check.max_items'"):
        load_recipe(overrides={"judge_check.max_item": 4})
    with pytest.raises(RecipeError, match=r"sl_quality: min_kept_share must be in \[0, 1\], got 2"):
        load_recipe(overrides={"sl_quality": {"min_kept_share": 2}})
    with pytest.raises(RecipeError, match="judge_check.calibration_files: .*missing.jsonl: no such file"):
        load_recipe(overrides={"judge_check": {"calibration_files": [str(tmp_path / "missing.jsonl")]}})
    with pytest.raises(RecipeError, match="no item to ask the judge"):
        load_recipe(overrides={"judge_check": {"include_builtin": False}})


def test_settings_another_section_holds_are_refused_in_a_recipe():
    """The sft stage hands the trainer sl_quality's settings, and the builders the top-level max_prompts; a second
    place to set them could only disagree."""
    with pytest.raises(RecipeError, match="sft.exclude_flagged_rows: .* set sl_quality.exclude_flagged instead"):
        load_recipe(overrides={"sft.exclude_flagged_rows": False})
    with pytest.raises(RecipeError, match="sft.min_kept_share: .* set sl_quality.min_kept_share instead"):
        load_recipe(overrides={"sft": {"min_kept_share": 0.1}})
    # The builders' max_prompts is the top-level one: the evaluation checks its prompts against what training used.
    with pytest.raises(RecipeError, match="sl_data.max_prompts: .* set the top-level max_prompts instead"):
        load_recipe(overrides={"sl_data.max_prompts": 4})
    with pytest.raises(RecipeError, match="pref_data.max_prompts: .* set the top-level max_prompts instead"):
        load_recipe(overrides={"pref_data": {"max_prompts": 4}})


def test_fingerprints_of_recipes_without_the_new_sections_do_not_change(tmp_path):
    stages = ("sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish")
    plain = {key: value for key, value in RECIPE.items() if key not in ("sl_quality", "judge_check", "stages")}

    def inputs(**changes) -> dict[str, dict]:
        pipeline = Pipeline(load_recipe(overrides={**plain, "run_dir": str(tmp_path / "run"), **changes}))
        return {stage: pipeline.fingerprint_inputs(stage) for stage in stages}

    base = inputs()
    assert not any({"sl_quality", "judge_check"} & set(record) for record in base.values())
    # The defaults written out are the same recipe.
    defaults = {"sl_quality": {"min_words": 3, "exclude_flagged": True, "min_kept_share": 0.5},
                "judge_check": {"enabled": True, "max_items": None, "calibration_files": []}}
    assert inputs(**defaults) == base

    def changed(**changes) -> set[str]:
        other = inputs(**changes)
        return {stage for stage in stages if other[stage] != base[stage]}

    # Later stages see the change through the output hashes of these two.
    assert changed(sl_quality={"min_words": 5}) == {"sl_data"}
    assert changed(sl_quality={"min_kept_share": 0.1}) == {"sl_data"}
    assert changed(judge_check={"max_items": 8}) == {"pref_data"}
    assert changed(judge_check={"min_judge_accuracy": 0.6}) == {"pref_data"}
    calibration = tmp_path / "items.jsonl"
    calibration.write_text('{"prompt": "Which? (A) [[[a]]] (B) [[[b]]]", "corrects": [" (A)"], "incorrects": [" (B)"]}\n')
    first = inputs(judge_check={"calibration_files": [str(calibration)]})["pref_data"]
    calibration.write_text('{"prompt": "Which? (A) [[[b]]] (B) [[[a]]]", "corrects": [" (B)"], "incorrects": [" (A)"]}\n')
    assert inputs(judge_check={"calibration_files": [str(calibration)]})["pref_data"] != first


def test_judge_check_disabled_skips_it_with_a_note(run, tmp_path):
    run_dir = _copy(run[0], tmp_path)
    _pipeline(run_dir, judge_check__enabled=False).run()
    record = _stages(run_dir)["pref_data"]
    assert "judge_quality" not in record["outputs"] and "judge_accuracy" not in record["metrics"]
    assert record["notes"] == [
        "judge check skipped (judge_check.enabled: false): how well the feedback model judges, and so the quality "
        "of the preference labels, is unknown"
    ]
