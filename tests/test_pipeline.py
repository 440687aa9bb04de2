"""The pipeline end to end on the tiny model: stages, manifest, skip / re-run rules, crash and resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hf_cai.pipeline import Pipeline, PipelineError, RecipeError, load_recipe

# Runs compared with each other (killed and resumed vs uninterrupted) compute in float32: see exact_float32.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("exact_float32")]

FAST_RECIPE = {
    "model": "tiny",
    "tiny_pretrain_steps": 0,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": None,
    "max_prompts": 8,
    "qlora_profile": "cpu",
    "seed": 3,
    "sl_data": {"rounds": 1, "max_new_tokens": 6, "few_shot": False, "shard_size": 2, "test_size": 0.25},
    # Six tokens cut every reply short, so the quality gates flag every row; these tests are about the run loop, so
    # SFT trains on the flagged rows anyway (the gates still count them: tests/test_pipeline_quality.py).
    "sl_quality": {"exclude_flagged": False},
    "sft": {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 0.002, "save_steps": 2},
    "pref_data": {"max_new_tokens": 6, "few_shot": False, "shard_size": 2, "test_size": 0.25, "temperature": 1.0},
    "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 1},
    "eval": {"max_prompts": 4, "max_new_tokens": 6},
}


def _write_recipe(tmp_path: Path, run_dir: Path, **changes) -> Path:
    recipe = json.loads(json.dumps(FAST_RECIPE))
    recipe["run_dir"] = str(run_dir)
    recipe["publish"] = {"folder": str(run_dir / "hub-repo")}
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / f"recipe-{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hf_cai", *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"hf-cai {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def _copy_run(reference_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the reference run (its own tiny base model included) and a recipe pointing at it."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    return run_dir, _write_recipe(tmp_path, run_dir)


def _rows(dataset_dir: Path) -> dict[str, list]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))
    return {name: split.to_list() for name, split in dataset.items()}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, exact_float32) -> Path:
    """One uninterrupted run of every stage up to a local publication."""
    tmp_path = tmp_path_factory.mktemp("reference")
    run_dir = tmp_path / "run"
    result = _cli("run", "--config", str(_write_recipe(tmp_path, run_dir)))
    assert "stage" in result.stdout and "publish" in result.stdout
    return run_dir


def test_full_run_writes_every_stage(reference_run):
    stages = _manifest(reference_run)
    assert list(stages) == ["sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish"]
    assert all(record["status"] == "done" and record["output_hash"] for record in stages.values())
    for stage, record in stages.items():  # each stage folder carries its own record, to rebuild the manifest from
        assert json.loads((reference_run / stage / "stage.json").read_text()) == {"format": 2, **record}
    assert json.loads((reference_run / "manifest.json").read_text())["run"]["base_model_id"] == "hf-cai/tiny-chat"
    assert stages["sl_data"]["metrics"]["rows"] > 0
    assert stages["sft"]["metrics"]["steps"] == 4 and stages["dpo"]["metrics"]["steps"] == 2
    sl = _rows(reference_run / "sl_data" / "dataset")
    assert {"train_sft", "test_sft", "train_prefs", "test_prefs"} <= set(sl)
    assert all(row["revisions"][0]["principle_id"] for row in sl["train_sft"])
    results = json.loads((reference_run / "eval" / "results.json").read_text())
    assert {m["name"] for m in results["metrics"]} >= {"harmlessness win rate", "helpfulness win rate"}
    repo = reference_run / "hub-repo"
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "constitution.yaml"} <= {
        p.name for p in repo.iterdir()
    }
    from hf_cai.constitution import Constitution

    assert Constitution.load(repo / "constitution.yaml").sha256 in (repo / "README.md").read_text()
    # Not a GGUF model: no record names a GGUF file, and the card says nothing of one.
    assert results["models"]["base_weights"] is None
    assert all(json.loads((reference_run / stage / "final" / "cai_training.json").read_text())["base_weights"] is None
               for stage in ("sft", "dpo"))
    card = (repo / "README.md").read_text()
    assert "GGUF" not in card and "Base weights" not in card and "de-quantised" not in card


def test_rerun_skips_finished_stages_and_publish_change_reruns_only_publish(reference_run, tmp_path):
    before = _manifest(reference_run)
    recipe_path = _write_recipe(tmp_path, reference_run)
    _cli("run", "--config", str(recipe_path))
    assert _manifest(reference_run) == before

    # Overrides written as "--key value" after --config; logging and checkpoint-keeping settings change no output,
    # so they re-run nothing, and the new publication folder re-runs only the publication.
    _cli(
        "run", "--config", str(recipe_path),
        "--sft.logging_steps", "3", "--sft.report_to", "none", "--dpo.save_total_limit", "1",
        "--dpo.logging_strategy", "epoch", "--generation_batch_size", "3",
        "--publish.folder", str(reference_run / "hub-repo-2"),
    )
    after = _manifest(reference_run)
    changed = [stage for stage in after if after[stage]["started"] != before[stage]["started"]]
    assert changed == ["publish"]
    assert (reference_run / "hub-repo-2" / "README.md").is_file()


def test_changed_constitution_reruns_sl_data_and_marks_later_stages_stale(reference_run, tmp_path):
    from hf_cai.constitution import Constitution

    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)
    other = Constitution.builtin("helpful-honest").save(tmp_path / "other.yaml")
    recipe_path = _write_recipe(tmp_path, run_dir, constitution=str(other))
    before = _manifest(run_dir)
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    after = _manifest(run_dir)
    assert after["sl_data"]["started"] != before["sl_data"]["started"]
    assert after["sl_data"]["output_hash"] != before["sl_data"]["output_hash"]
    pipeline = Pipeline(load_recipe(recipe_path))
    for stage in ("sft", "pref_data", "dpo", "eval", "card", "publish"):
        assert pipeline.fingerprint(stage) != after[stage]["fingerprint"], stage


def _kill_when(process: subprocess.Popen, log: Path, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the kill point:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("the kill point was not reached in time")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _start(recipe_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The run in a real subprocess; its log goes to a file (a pipe nobody reads would fill up and stall it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = recipe_path.with_suffix(".log")
    command = [sys.executable, "-m", "hf_cai", "run", "--config", str(recipe_path), *extra]
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, env=env)
    return process, log


def test_killed_during_sl_data_resumes_to_the_same_rows(reference_run, tmp_path):
    run_dir = tmp_path / "killed-sl"
    recipe_path = _write_recipe(tmp_path, run_dir)
    shards = run_dir / "sl_data" / "shards"
    process, log = _start(recipe_path, "--until", "sl_data")
    _kill_when(process, log, lambda: shards.is_dir() and len(list(shards.glob("shard-?????.jsonl"))) >= 1)
    finished_before = len(list(shards.glob("shard-?????.jsonl")))
    assert finished_before < 4 and _manifest(run_dir)["sl_data"]["status"] == "running"
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    record = _manifest(run_dir)["sl_data"]
    assert record["status"] == "done" and record["resumed"] is True
    assert _rows(run_dir / "sl_data" / "dataset") == _rows(reference_run / "sl_data" / "dataset")


def test_killed_between_critique_and_revision_rounds_loses_at_most_one_step(tmp_path):
    """Four rounds per shard: the kill lands after a shard's round-1 critiques were saved; the rerun replays the
    saved steps instead of generating them again and ends with the rows of an uninterrupted run."""
    sl_data = {**FAST_RECIPE["sl_data"], "rounds": 4, "max_new_tokens": 24, "shard_size": 4}
    reference = _write_recipe(tmp_path, tmp_path / "clean", sl_data=sl_data)
    _cli("run", "--config", str(reference), "--until", "sl_data")

    run_dir = tmp_path / "killed-rounds"
    recipe_path = _write_recipe(tmp_path, run_dir, sl_data=sl_data)
    steps = run_dir / "sl_data" / "shards" / "shard-00000.steps.jsonl"
    process, log = _start(recipe_path, "--until", "sl_data")
    _kill_when(process, log, lambda: steps.is_file() and '"step": "critique-1"' in steps.read_text())
    assert not (run_dir / "sl_data" / "shards" / "shard-00000.jsonl").exists(), "the kill must land inside the shard"
    saved = [json.loads(line)["step"] for line in steps.read_text().splitlines() if line.endswith("}")]
    assert saved[:2] == ["initial", "critique-1"] and "revision-4" not in saved

    resumed = _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    assert f"shard-00000.steps.jsonl: reusing {len(saved)} finished steps ({', '.join(saved)})" in resumed.stderr
    assert not steps.exists()
    assert _rows(run_dir / "sl_data" / "dataset") == _rows(tmp_path / "clean" / "sl_data" / "dataset")


def test_killed_during_sft_resumes_from_the_last_checkpoint(reference_run, tmp_path):
    run_dir = tmp_path / "killed-sft"
    recipe_path = _write_recipe(tmp_path, run_dir)
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    process, log = _start(recipe_path, "--until", "sft")
    _kill_when(process, log, lambda: (run_dir / "sft" / "checkpoint-2" / "trainer_state.json").is_file())
    assert not (run_dir / "sft" / "final").exists()
    _cli("run", "--config", str(recipe_path), "--until", "sft")
    record = _manifest(run_dir)["sft"]
    assert record["status"] == "done" and record["resumed"] is True
    assert record["metrics"]["resumed_from"].startswith("checkpoint-")
    assert record["metrics"]["steps"] == 4
    assert _rows(run_dir / "sl_data" / "dataset") == _rows(reference_run / "sl_data" / "dataset")
    state = json.loads((run_dir / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Resumed training follows the uninterrupted run (weights, optimizer, scheduler and RNG states restored, the
    # adapter kept in the precision it trained in): same losses after the resume point, same final adapter.
    reference_state = json.loads((reference_run / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    reference_losses = [entry["loss"] for entry in reference_state["log_history"] if "loss" in entry]
    assert losses == pytest.approx(reference_losses, abs=1e-4)
    from safetensors.torch import load_file

    resumed = load_file(run_dir / "sft" / "final" / "adapter_model.safetensors")
    uninterrupted = load_file(reference_run / "sft" / "final" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert resumed[name].dtype == tensor.dtype, name
        assert torch.allclose(resumed[name].float(), tensor.float(), rtol=1e-2, atol=1e-3), name  # bf16 rounding


# ----------------------------------------------------------------------------- what a stage re-uses
def test_from_reuses_the_dataset_shards_of_the_same_fingerprint(reference_run, tmp_path):
    # A copy: the shards identify the base model by what its folder holds, not where it is.
    run_dir, recipe_path = _copy_run(reference_run, tmp_path)
    before = _manifest(run_dir)
    shards = {p.name: p.stat().st_mtime_ns for p in (run_dir / "sl_data" / "shards").iterdir()}
    result = _cli("run", "--config", str(recipe_path), "--from", "sl_data", "--until", "sft")
    assert "resuming: 4 of 4 shards already built" in result.stderr
    assert "deleting" not in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "sl_data" / "shards").iterdir()} == shards
    after = _manifest(run_dir)
    assert after["sl_data"]["started"] != before["sl_data"]["started"]
    # Reassembled from the same shards, the dataset is byte-identical, so the next stage stays up to date.
    assert after["sl_data"]["output_hash"] == before["sl_data"]["output_hash"]
    assert after["sft"] == before["sft"]


def test_a_finished_stage_whose_outputs_changed_runs_again_on_resume(reference_run, tmp_path):
    run_dir, recipe_path = _copy_run(reference_run, tmp_path)
    before = _manifest(run_dir)
    # Rewritten in place: same size, other content, a later modification time.
    card = run_dir / "card" / "README.md"
    original, stat = card.read_bytes(), card.stat()
    card.write_bytes(original.replace(b"constitution", b"CONSTITUTION", 1))
    os.utime(card, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert card.stat().st_size == stat.st_size and card.read_bytes() != original
    # Deleted.
    arrow = sorted((run_dir / "sl_data" / "dataset" / "train_sft").glob("data-*.arrow"))[0]
    arrow.unlink()
    # Only touched: the same content, so no change (the outputs are hashed again, once).
    results = run_dir / "eval" / "results.json"
    os.utime(results, ns=(results.stat().st_atime_ns, results.stat().st_mtime_ns + 10**9))

    result = _cli("run", "--config", str(recipe_path), "--until", "card")  # (the copy publishes to another folder)
    relative = arrow.relative_to(run_dir).as_posix()
    assert f"stage sl_data: its outputs changed since it finished: {relative} (missing); running it again" in (
        result.stderr
    )
    assert "stage card: its outputs changed since it finished: card/README.md (rewritten); running it again" in (
        result.stderr
    )
    after = _manifest(run_dir)
    assert [stage for stage in after if after[stage]["started"] != before[stage]["started"]] == ["sl_data", "card"]
    # Made again as recorded, so the stages computed from them stay up to date.
    assert arrow.is_file() and card.read_bytes() == original
    assert all(after[stage]["output_hash"] == before[stage]["output_hash"] for stage in before)
    assert after["eval"]["output_files"]["eval/results.json"][1] == results.stat().st_mtime_ns

    # The manifest rebuilt from the stage folders checks them the same way.
    card.write_text(card.read_text().upper())
    (run_dir / "manifest.json").write_text("{")
    assert Pipeline(load_recipe(recipe_path)).manifest.stage("card")["status"] == "running"


def test_a_changed_training_setting_reruns_the_stage_and_names_what_it_deletes(reference_run, tmp_path):
    run_dir, recipe_path = _copy_run(reference_run, tmp_path)
    before = _manifest(run_dir)
    result = _cli("run", "--config", str(recipe_path), "--sft.learning_rate", "1e-3", "--until", "sft")
    assert "stage sft: changed: settings.learning_rate: 0.002 -> 0.001; running it again" in result.stderr
    assert f"stage sft: deleting README.md, checkpoint-2, checkpoint-4, final in {run_dir / 'sft'}" in result.stderr
    after = _manifest(run_dir)
    assert after["sl_data"] == before["sl_data"]
    assert after["sft"]["status"] == "done" and after["sft"]["output_hash"] != before["sft"]["output_hash"]


# ----------------------------------------------------------------------------- fingerprints and the judge
def _fingerprints(tmp_path: Path, **changes) -> dict[str, str]:
    settings = {**FAST_RECIPE, "run_dir": str(tmp_path / "fingerprints"), "publish": {"folder": "out"}, **changes}
    pipeline = Pipeline(load_recipe(overrides=settings))
    stages = ("sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish")
    return {stage: pipeline.fingerprint(stage) for stage in stages}


@pytest.mark.parametrize(("builder", "stage"), [("critique_revision", "sl_data"), ("ai_feedback", "pref_data")])
def test_a_new_data_format_makes_its_stage_run_again(builder, stage, tmp_path, monkeypatch):
    """Data built in an earlier format differs from what the builder makes now: the stage is not up to date."""
    import importlib

    before = _fingerprints(tmp_path)
    module = importlib.import_module(f"hf_cai.builders.{builder}")
    monkeypatch.setattr(module, "FORMAT_VERSION", module.FORMAT_VERSION + 1)
    after = _fingerprints(tmp_path)
    assert {name for name in before if after[name] != before[name]} == {stage}


def test_fingerprints_hold_every_input_that_changes_an_output_and_nothing_else(tmp_path):
    served = {"endpoint": "http://127.0.0.1:9/v1", "endpoint_model": "policy-1.5b"}
    base = _fingerprints(tmp_path, **served)

    def changed(**changes) -> set[str]:
        other = _fingerprints(tmp_path, **{**served, **changes})
        return {stage for stage in base if other[stage] != base[stage]}

    # The served base model writes the SL-CAI data, judges the pairs (no feedback model here) and is the evaluation's
    # baseline and judge.
    assert changed(endpoint_model="policy-3b") == {"sl_data", "pref_data", "eval"}
    assert changed(endpoint="http://127.0.0.1:10/v1") == {"sl_data", "pref_data", "eval"}
    assert changed(feedback_model="judge-72b") == {"pref_data", "eval"}
    assert changed(feedback_model="judge-72b", feedback_endpoint="http://127.0.0.1:11/v1") == {"pref_data", "eval"}
    # The endpoint serves the policy too (its adapters registered there): the local copy's 4-bit loading changes
    # nothing generated, until the policy is local again.
    assert changed(load_in_4bit=False) == set()
    assert changed(policy_endpoint="local") == {"pref_data", "eval"}
    assert changed(policy_endpoint="local", load_in_4bit=False) == {"pref_data", "eval"}
    assert changed(policy_endpoint="http://127.0.0.1:12/v1") == {"pref_data", "eval"}
    assert changed(policy_adapter_names={"sft": "cai-sft"}) == {"pref_data"}
    assert changed(policy_adapter_names={"dpo": "cai-dpo"}) == {"eval"}
    assert changed(seed=4) == {"sl_data", "sft", "pref_data", "dpo", "eval"}
    assert changed(max_prompts=6) == {"sl_data", "pref_data", "eval"}
    assert changed(prompt_column="text") == {"sl_data", "pref_data", "eval"}
    assert changed(sl_data={**FAST_RECIPE["sl_data"], "temperature": 0.5}) == {"sl_data"}
    assert changed(sft={**FAST_RECIPE["sft"], "learning_rate": 1e-4}) == {"sft"}
    assert changed(model_hub_id="org/tiny") == {"card", "publish"}
    assert changed(card={"license": "mit"}) == {"card", "publish"}
    assert changed(constitution="helpful-honest") == set(base)
    # Later stages see a change through their inputs' output hashes, recorded as each stage finishes.
    neutral = {
        "sft": {**FAST_RECIPE["sft"], "logging_steps": 7, "report_to": "tensorboard", "logging_strategy": "epoch",
                "save_total_limit": 1, "push_to_hub": True, "hub_model_id": "me/x", "output_dir": "elsewhere"},
        "dpo": {**FAST_RECIPE["dpo"], "save_steps": 5, "run_name": "try-2", "dataloader_num_workers": 2},
        "generation_batch_size": 3,
        "endpoint_api_key_env": "SERVER_KEY",
        "run_dir": str(tmp_path / "moved" / "fingerprints"),  # the folder's name names a model published to a folder
        "stages": ["sl_data", "sft"],
    }
    for key, value in neutral.items():
        assert changed(**{key: value}) == set(), key
    # Every output-neutral key is a real setting of some stage.
    from hf_cai.pipeline.recipe import OUTPUT_NEUTRAL_KEYS, section_fields

    assert OUTPUT_NEUTRAL_KEYS <= set().union(*section_fields().values())


def test_the_judge_is_the_feedback_model_even_when_an_endpoint_serves_the_policy(tiny_model_dir, tmp_path):
    from openai_server import OpenAIServer

    from hf_cai.backends import TransformersBackend
    from hf_cai.pipeline.stages.backends import feedback_backend, generation_backend

    model = TransformersBackend(str(tiny_model_dir))
    with OpenAIServer(model, model_name="policy-1.5b") as policy, OpenAIServer(model, model_name="judge-72b") as judge:
        settings = {"run_dir": str(tmp_path / "run"), "endpoint": policy.base_url, "endpoint_model": "policy-1.5b",
                    "feedback_model": "judge-72b"}
        pipeline = Pipeline(load_recipe(overrides={**settings, "feedback_endpoint": judge.base_url}))
        base = generation_backend(pipeline)
        question = [[{"role": "user", "content": "Which reply is less harmful? (A) no (B) yes"}]]
        feedback_backend(pipeline, base).option_logprobs(question, ["(A)", "(B)"])
        judged = judge.request_count
        assert judged > 0 and policy.request_count == 0
        base.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=2)
        assert judge.request_count == judged and policy.request_count > 0
        # Without a feedback endpoint the judge is asked for by name at the policy's endpoint, which serves only the
        # policy here: the request names the judge, and this server refuses it.
        same_server = feedback_backend(Pipeline(load_recipe(overrides=settings)), base)
        assert same_server.identity == {"backend": "endpoint", "model": "judge-72b"}


# ----------------------------------------------------------------------------- the manifest
def test_a_truncated_manifest_is_rebuilt_from_the_stage_folders(reference_run, tmp_path, caplog):
    run_dir, recipe_path = _copy_run(reference_run, tmp_path)
    before = _manifest(run_dir)
    text = (run_dir / "manifest.json").read_text()
    (run_dir / "manifest.json").write_text(text[: len(text) // 2])
    (run_dir / "eval" / "results.json").write_text("{}")  # an output changed since its stage finished
    with caplog.at_level("WARNING", logger="hf_cai.pipeline"):
        pipeline = Pipeline(load_recipe(recipe_path))
    assert "was unreadable (it is not valid JSON" in caplog.text and "rebuilt it from the stage folders" in caplog.text
    assert [p.name for p in run_dir.glob("manifest.unreadable-*.json")] and (run_dir / "manifest.json").is_file()
    rebuilt = _manifest(run_dir)
    assert rebuilt["eval"]["status"] == "running"  # it resumes on the next run
    for stage in ("sl_data", "sft", "pref_data", "dpo"):  # the rest is proven finished: a rerun skips them
        assert rebuilt[stage] == before[stage]
        assert pipeline.fingerprint(stage) == rebuilt[stage]["fingerprint"]


def test_an_unreadable_manifest_without_stage_records_stops_with_what_to_do(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "sft" / "checkpoint-2").mkdir(parents=True)
    (run_dir / "manifest.json").write_text('{"format": 2, "stag')
    expected = (r"manifest.json is unreadable .* holds work without a stage.json .* "
                r"Set run_dir to a new folder, or delete .*sft so that the stage runs again")
    with pytest.raises(PipelineError, match=expected):
        Pipeline(load_recipe(overrides={"run_dir": str(run_dir)}))


def test_a_run_directory_of_an_older_format_gets_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"stages": {"sl_data": {"status": "done", "fingerprint": "x"}}}))
    with pytest.raises(PipelineError, match=r"written by an older version of hf_cai \(run directory format 1; this "
                                            r"version reads format 2\).*Set run_dir to a new folder"):
        Pipeline(load_recipe(overrides={"run_dir": str(run_dir)}))


def test_manifest_saves_never_collide_or_leave_partial_files(tmp_path):
    import threading

    from hf_cai.pipeline import Manifest

    path = tmp_path / "manifest.json"
    errors = []

    def save_many(name: str) -> None:
        manifest = Manifest(path)
        try:
            for index in range(200):
                manifest.stage(name)["count"] = index
                manifest.save()
        except OSError as error:  # with one shared temporary name, a writer finds its file renamed by the other
            errors.append(error)

    threads = [threading.Thread(target=save_many, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(path.read_text())["format"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


# ----------------------------------------------------------------------------- the command line
def test_overrides_after_the_recipe_reach_the_recipe():
    from hf_cai.cli import build_parser, split_overrides
    from hf_cai.cli.run import parse_overrides

    argv = ["-v", "run", "--config", "r.yaml", "--sft.learning_rate", "1e-4", "--from", "dpo", "--seed", "-1",
            "--max-prompts", "8", "--until=eval", "--publish.folder=out"]
    kept, overrides = split_overrides(build_parser(), argv)
    args = build_parser().parse_args(kept)
    assert (args.config, args.from_stage, args.until, args.recipe) == ("r.yaml", "dpo", "eval", None)
    expected = {"sft.learning_rate": 1e-4, "seed": -1, "max_prompts": 8, "publish.folder": "out"}
    assert parse_overrides(overrides) == expected


def test_a_mistyped_override_is_reported_as_an_override(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"max_prompts": 4}))
    result = _cli("run", "--config", str(path), "--sft.learning_rate", "1e-4", "--max_promts", "3", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "override 'max_promts': unknown key; did you mean 'max_prompts'?" in result.stderr
    result = _cli("run", "--config", str(path), "--sft.learnin_rate", "1e-4", check=False)
    assert "override 'sft.learnin_rate': 'sft' has no setting 'learnin_rate'; did you mean 'sft.learning_rate'?" in (
        result.stderr
    )


def test_publishing_a_finished_run_takes_its_base_model_and_license_from_the_run(reference_run, tmp_path):
    result = _cli("publish", str(reference_run), "me/tiny-cai", "--dry-run")
    assert "base_model: hf-cai/tiny-chat" in result.stdout and "license: apache-2.0" in result.stdout
    # Outside a run nothing tells the base model's Hub id: the error names the flag that gives it.
    shutil.copytree(reference_run / "dpo" / "final", tmp_path / "adapter")
    result = _cli("publish", str(tmp_path / "adapter"), "me/tiny-cai", "--license", "mit", "--dry-run", check=False)
    assert result.returncode == 2
    assert "pass --base-model-id org/name, the Hub repository that folder came from" in result.stderr
    assert "base_model_id" not in result.stderr


# ----------------------------------------------------------------------------- bad input
def test_unknown_keys_name_the_closest_valid_one(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("max_promts: 4\n")
    with pytest.raises(RecipeError, match="unknown key 'max_promts'; did you mean 'max_prompts'"):
        load_recipe(path)
    path.write_text("sft:\n  learnin_rate: 0.1\n")
    with pytest.raises(RecipeError, match="unknown key 'sft.learnin_rate'; did you mean 'learning_rate'"):
        load_recipe(path)


def test_an_unknown_stage_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages: [sl_data, evall]\n")
    with pytest.raises(RecipeError, match="stages: unknown stage 'evall'; did you mean 'eval'"):
        load_recipe(path)


def test_an_unknown_rl_method_is_refused_in_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rl_method: ppo\n")
    result = _cli("run", "--config", str(path), check=False)
    assert result.returncode == 2
    assert "rl_method: unknown value 'ppo'; choose 'dpo' or 'grpo'" in result.stderr
    assert "Traceback" not in result.stderr


def test_stage_orders_that_cannot_work(tmp_path):
    with pytest.raises(RecipeError, match="cannot run in this order"):
        load_recipe(overrides={"stages": ["sft", "sl_data"]})
    with pytest.raises(RecipeError, match="'grpo' belongs to rl_method 'grpo'"):
        load_recipe(overrides={"stages": ["sl_data", "grpo"]})
    with pytest.raises(RecipeError, match="'space' loads the published model from the Hub: set publish.repo_id"):
        load_recipe(overrides={"publish": {"folder": "out"}, "space": {"repo_id": "me/chat"}})


def test_missing_input_from_a_previous_stage(tmp_path):
    recipe = load_recipe(overrides={"run_dir": str(tmp_path / "run"), "stages": ["sft"]})
    with pytest.raises(PipelineError, match="missing input: stage 'sl_data' has not produced 'dataset'"):
        Pipeline(recipe).run()


def test_a_prompt_file_without_the_prompt_column_is_refused_before_any_work(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I pick a lock?"}) + "\n" + json.dumps({"question": "Hi?"}) + "\n")
    recipe = load_recipe(overrides={"run_dir": str(tmp_path / "run"), "prompts": str(prompts)})
    with pytest.raises(RecipeError, match=rf"prompts: {prompts}, row 2: no value in column 'prompt'\. Name the "
                                          r"column that holds the prompts \(.*prompt_column in a recipe\)"):
        Pipeline(recipe).run()
    assert not (tmp_path / "run").exists()


def test_a_prompt_file_with_an_empty_prompt_is_refused_before_any_work(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,category\nHow do I pick a lock?,crime\n,crime\n")
    recipe = load_recipe(overrides={"run_dir": str(tmp_path / "run"), "prompts": str(prompts)})
    with pytest.raises(RecipeError, match=rf"prompts: {prompts}, row 2: empty prompt"):
        Pipeline(recipe).run()
    assert not (tmp_path / "run").exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def test_a_disk_that_fills_during_a_checkpoint_keeps_finished_work_and_says_what_to_do(tmp_path):
    run_dir = tmp_path / "full"
    recipe_path = _write_recipe(tmp_path, run_dir)
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    before = _manifest(run_dir)
    # Writes past 20 kB fail as on a full disk: the run's small records fit, the first checkpoint's adapter does not.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hf_cai", "run", "--config", str(recipe_path), "--until", "sft"]
    full = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=_limit_file_size(20_000))
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    assert f"stage 'sft': no space left while writing in {run_dir / 'sft'}" in full.stderr
    assert "Finished stages, dataset shards and complete checkpoints are kept; free some space" in full.stderr
    assert "run the same command again to resume" in full.stderr
    after = _manifest(run_dir)
    assert after["sl_data"] == before["sl_data"] and after["sft"]["status"] == "running"
    assert (run_dir / "sft" / "checkpoint-2").is_dir()  # cut short

    resumed = _cli("run", "--config", str(recipe_path), "--until", "sft")
    assert "deleting " + str(run_dir / "sft" / "checkpoint-2") + ": its saving was interrupted" in resumed.stderr
    assert _manifest(run_dir)["sft"]["status"] == "done" and _manifest(run_dir)["sft"]["metrics"]["steps"] == 4


def test_a_token_in_a_recipe_file_is_refused(tmp_path):
    secret = "hf_" + "S3cretTok" * 5
    path = tmp_path / "r.yaml"
    cases = {
        "publish:\n  repo_id: me/m\n  token: {secret}\n": "'publish.token'",
        "sft:\n  hub_token: {secret}\n": "'sft.hub_token'",
        "space:\n  repo_id: me/chat\n  api_key: abc\n": "'space.api_key'",
        "endpoint: http://user:pa55word@127.0.0.1:8000/v1\n": "the value of 'endpoint'",
        "eval:\n  helpful_prompts: [{secret}]\n": "the value of 'eval.helpful_prompts[0]'",
    }
    for text, where in cases.items():
        path.write_text(text.format(secret=secret))
        with pytest.raises(RecipeError) as raised:
            load_recipe(path)
        message = str(raised.value)
        assert f"{path}: {where} holds a secret" in message, message
        assert "set HF_TOKEN in the environment or run `hf auth login`" in message
        assert secret not in message and "pa55word" not in message
    path.write_text("sft:\n  eos_token: <|im_end|>\n  pad_token: <|pad|>\n")  # tokenizer settings, not secrets
    assert load_recipe(path).sft == {"eos_token": "<|im_end|>", "pad_token": "<|pad|>"}


def test_a_token_on_the_run_command_line_is_refused(tmp_path):
    secret = "hf_" + "S3cretTok" * 5
    path = tmp_path / "r.yaml"
    path.write_text("max_prompts: 4\n")
    cases = {"--publish.token": ["--publish.token", secret], "--sft.hub_token": ["--sft.hub_token=not-for-logs"],
             "--model": ["--model", secret]}
    for option, extra in cases.items():
        result = _cli("run", "--config", str(path), *extra, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"hf-cai run: error: {option}: tokens are not taken on the command line" in result.stderr
        assert "Set HF_TOKEN in the environment or run `hf auth login`" in result.stderr
        assert secret not in result.stderr and "not-for-logs" not in result.stderr


def test_a_token_on_the_publish_command_line_is_refused(reference_run):
    secret = "hf_" + "S3cretTok" * 5
    result = _cli("publish", str(reference_run), "me/tiny-cai", "--token", secret, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hf-cai publish: error: --token: tokens are not taken on the command line" in result.stderr
    assert "Set HF_TOKEN in the environment or run `hf auth login`" in result.stderr
    assert secret not in result.stderr


def test_a_run_on_a_gguf_file_names_the_file_in_its_records_results_and_card(tiny_gguf_file, gguf_cache, tmp_path):
    from hf_cai.gguf import weights_source

    run_dir = tmp_path / "gguf"
    recipe_path = _write_recipe(tmp_path, run_dir, model=str(tiny_gguf_file), model_hub_id="org/tiny-chat",
                                card={"license": "apache-2.0"})
    _cli("run", "--config", str(recipe_path), "--until", "card")
    source = weights_source(tiny_gguf_file)  # converted by the run into the same cache
    assert source["file"] == "tiny-chat.Q4_1.gguf" and source["quantization"] == "Q4_1"
    for stage in ("sft", "dpo"):
        assert json.loads((run_dir / stage / "final" / "cai_training.json").read_text())["base_weights"] == source
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["models"]["base"] == "org/tiny-chat" and results["models"]["base_weights"] == source
    assert "tiny-chat.Q4_1.gguf (Q4_1 GGUF file of org/tiny-chat" in results["evaluated_artifact"]
    card = (run_dir / "card" / "README.md").read_text()
    assert "base_model: org/tiny-chat" in card
    assert f"GGUF file `tiny-chat.Q4_1.gguf` (quantisation Q4_1; tensors: 16 Q4_1, 5 F32; sha256 `{source['sha256']}`)" \
        in " ".join(card.split())
    assert "close to the one trained and evaluated here but not identical to it" in " ".join(card.split())


def test_grpo_route_trains_a_reward_model_then_grpo(tmp_path):
    run_dir = tmp_path / "grpo"
    recipe_path = _write_recipe(
        tmp_path,
        run_dir,
        rl_method="grpo",
        load_in_4bit=False,
        reward={"max_steps": 2, "per_device_train_batch_size": 2},
        grpo={"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8},
    )
    result = _cli("run", "--config", str(recipe_path), "--until", "grpo")
    stages = _manifest(run_dir)
    assert list(stages) == ["sl_data", "sft", "pref_data", "reward", "grpo"]
    assert stages["grpo"]["metrics"]["steps"] == 2
    assert (run_dir / "grpo" / "final" / "adapter_model.safetensors").is_file()
    # GRPO trained with the run's QLoRA profile where the recipe sets nothing, like the other stages, and its
    # config raised no warning (TRL's gradient_checkpointing is given to its current name).
    args = torch.load(run_dir / "grpo" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.learning_rate, args.save_total_limit, args.save_steps) == (1e-5, 2, 1)
    assert (args.per_device_train_batch_size, args.num_generations, args.max_completion_length) == (4, 4, 8)
    assert args.activation_checkpointing is False and args.qlora_profile == "cpu"
    assert not [line for line in result.stderr.splitlines() if "Warning:" in line], result.stderr[-3000:]
    assert (run_dir / "reward" / "final" / "constitution.yaml").is_file()
    # load_in_4bit: false reaches training as well as generation: every stage trained plain LoRA.
    for stage in ("sft", "reward", "grpo"):
        record = json.loads((run_dir / stage / "final" / "cai_training.json").read_text())
        assert record["quantization"] is None and record["method"] == "lora", stage


def test_sl_data_through_an_endpoint_equals_local_generation(tiny_model_dir, tmp_path):
    from openai_server import OpenAIServer

    from hf_cai.backends import TransformersBackend

    settings = {
        "model": str(tiny_model_dir),
        "load_in_4bit": False,  # the server below serves the unquantised model
        "helpful_prompts": None,
        "max_prompts": 4,
        "stages": ["sl_data"],
        "sl_data": {"rounds": 1, "max_new_tokens": 5, "few_shot": False, "test_size": 0.25},
    }
    Pipeline(load_recipe(overrides={**settings, "run_dir": str(tmp_path / "local")})).run()
    with OpenAIServer(TransformersBackend(str(tiny_model_dir)), model_name="tiny") as server:
        remote = {**settings, "run_dir": str(tmp_path / "remote"), "endpoint": server.base_url, "endpoint_model": "tiny"}
        Pipeline(load_recipe(overrides=remote)).run()
        assert server.request_count > 0
    assert _rows(tmp_path / "remote" / "sl_data" / "dataset") == _rows(tmp_path / "local" / "sl_data" / "dataset")


def test_the_policy_generates_on_the_endpoint_with_its_adapter_registered_there(tiny_model_dir, tmp_path):
    """With an endpoint serving LoRA adapters, pref_data asks it for the SFT adapter and eval for the DPO one, each
    registered under a name from its content and unloaded after the stage; no local copy of the model is loaded by
    either stage: the recipe's model has no weights while they run. An adapter folder the server cannot read stops
    pref_data before it generates anything, with the path in the error, and the same command resumes."""
    import shutil

    from openai_server import OpenAIServer

    from hf_cai.backends import TransformersBackend
    from hf_cai.backends.lora_adapters import AdapterLoadError, adapter_content_name

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    weights, hidden = model_dir / "model.safetensors", tmp_path / "model.safetensors"
    served = TransformersBackend(str(tiny_model_dir))
    settings = {**FAST_RECIPE, "model": str(model_dir), "load_in_4bit": False, "run_dir": str(tmp_path / "run"),
                "endpoint_model": "tiny"}

    def run(server, stages, **changes):
        Pipeline(load_recipe(overrides={**settings, "endpoint": server.base_url, "stages": stages, **changes})).run()

    with OpenAIServer(served, model_name="tiny") as server:
        run(server, ["sl_data", "sft"])
        weights.rename(hidden)  # from here, loading the model locally fails
        with OpenAIServer(served, model_name="tiny", filesystem_root=str(tmp_path / "elsewhere")) as foreign:
            with pytest.raises(AdapterLoadError, match=f"{tmp_path / 'run' / 'sft'}.*must see this same path"):
                run(server, ["sl_data", "sft", "pref_data"], policy_endpoint=foreign.base_url)
            assert foreign.models_requested == {}
        stages = _manifest(tmp_path / "run")
        assert stages["sft"]["status"] == "done" and stages["pref_data"]["status"] == "running"

        run(server, ["sl_data", "sft", "pref_data"])
        hidden.rename(weights)
        run(server, ["dpo"])  # training is local
        weights.rename(hidden)
        run(server, ["eval"])
        stages = _manifest(tmp_path / "run")
        assert all(stages[stage]["status"] == "done" for stage in ("sl_data", "sft", "pref_data", "dpo", "eval"))
        sft_name = adapter_content_name(tmp_path / "run" / "sft" / "final", prefix="hf-cai-sft")
        dpo_name = adapter_content_name(tmp_path / "run" / "dpo" / "final", prefix="hf-cai-dpo")
        assert server.models_requested[sft_name] > 0 and server.models_requested[dpo_name] > 0
        assert not server.adapters, "each stage unloads the adapter it registered"
        assert stages["pref_data"]["inputs"]["policy"] == {"endpoint": server.base_url, "endpoint_model": "tiny"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"endpoint": "http://127.0.0.1:9/v1", "policy_adapter_names": {"reward": "x"}},
         "policy_adapter_names.reward: not a training stage with an adapter"),
        ({"endpoint": "http://127.0.0.1:9/v1", "policy_adapter_names": {"sft": ""}}, "policy_adapter_names.sft: give"),
        ({"policy_adapter_names": {"sft": "cai-sft"}}, "no server generates the policy's replies"),
        ({"endpoint": "http://127.0.0.1:9/v1", "policy_endpoint": "local", "policy_adapter_names": {"sft": "cai-sft"}},
         "no server generates the policy's replies"),
    ],
)
def test_policy_adapter_names_are_checked_when_the_recipe_is_read(changes, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(overrides=changes)
