"""SL-CAI and RL-CAI dataset builders: prompt sources, provenance, determinism, resume and TRL compatibility."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict, load_from_disk
from openai_server import OpenAIServer

from hf_cai.backends import BackendError, EndpointBackend, TransformersBackend
from hf_cai.builders import (
    AIFeedbackBuilder,
    AIFeedbackConfig,
    CritiqueRevisionBuilder,
    CritiqueRevisionConfig,
    FingerprintMismatchError,
    JudgeCheckConfig,
    PreferenceScorer,
    builtin_prompts,
    clean_response,
    load_prompts,
)
from hf_cai.builders.ai_feedback import preference_record
from hf_cai.cli import main as cli_main
from hf_cai.constitution import Constitution

PROMPTS = list(builtin_prompts("red_team")["prompt"][:6])
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"max_new_tokens": 10, "few_shot": False, "shard_size": 4}
CLI = "import sys; from hf_cai.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(tiny_model_dir, batch_size=8)


@pytest.fixture(scope="module")
def constitution():
    return Constitution.builtin("harmless")


class Recording:
    """Wraps a real backend and records the conversations of every generation call."""

    def __init__(self, inner):
        self.inner = inner
        self.identity = inner.identity
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate(self, conversations, **kwargs):
        return [generation.text for generation in self.generate_detailed(conversations, **kwargs)]

    def generate_detailed(self, conversations, **kwargs):
        self.calls.append([list(c) for c in conversations])
        return self.inner.generate_detailed(conversations, **kwargs)

    def option_logprobs(self, prompts, options):
        return self.inner.option_logprobs(prompts, options)


class RecordingTransformersBackend(TransformersBackend):
    """The real backend, keeping every conversation it was asked to continue."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[list[list[dict[str, str]]]] = []

    def generate_detailed(self, conversations, **kwargs):
        self.calls.append([list(c) for c in conversations])
        return super().generate_detailed(conversations, **kwargs)

    def rendered(self, conversation) -> str:
        """The conversation as the model reads it: rendered by the chat template, with the generation prompt."""
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def _options_in(chat):
    """The (A) and (B) replies of the last multiple-choice question in a feedback chat, or of a judge calibration
    question (``(A) [[[...]]] (B) [[[...]]]``)."""
    question = next((m["content"] for m in reversed(chat) if "\nOptions:\n(A) " in m["content"]), None)
    if question is None:
        return re.search(r"\(A\) \[\[\[(.*?)\]\]\]\s*\(B\) \[\[\[(.*)\]\]\]", chat[-1]["content"], re.DOTALL).groups()
    body = question.split("\nOptions:\n(A) ", 1)[1]
    first, rest = body.split("\n(B) ", 1)
    return first, rest.rsplit("\n\n", 1)[0]


class ShorterReplyJudge:
    """A feedback-model double: it answers the multiple-choice question preferring the shorter reply with probability
    ``confidence`` (or, with ``position_bias``, always gives option (A) that probability)."""

    identity = {"backend": "scripted-judge"}

    def __init__(self, confidence: float = 0.9, position_bias: float | None = None):
        self.confidence = confidence
        self.position_bias = position_bias
        self.reasoning_requests: list = []

    def generate(self, conversations, **kwargs):
        self.reasoning_requests.extend(conversations)
        return ["Comparing the two replies carefully." for _ in conversations]

    def option_logprobs(self, prompts, options):
        assert tuple(options) == ("(A)", "(B)")
        rows = []
        for chat in prompts:
            first, second = _options_in(chat)
            if self.position_bias is not None:
                p_first = self.position_bias
            elif len(first) == len(second):
                p_first = 0.5
            else:
                p_first = self.confidence if len(first) < len(second) else 1 - self.confidence
            rows.append([math.log(p_first), math.log(1 - p_first)])
        return rows


def _as_lists(dataset):
    if isinstance(dataset, DatasetDict):
        return {name: split.to_list() for name, split in dataset.items()}
    return dataset.to_list()


# ---------------------------------------------------------------------- prompt sources
def test_load_prompts_from_every_source(tmp_path):
    assert load_prompts(["Hi there"]) == [[{"role": "user", "content": "Hi there"}]]
    transcript = "\n\nHuman: What is a ratio: part to whole?\n\nAssistant: A ratio: two numbers.\n\nHuman: And a rate?\n\nAssistant:"
    assert load_prompts([transcript]) == [
        [
            {"role": "user", "content": "What is a ratio: part to whole?"},
            {"role": "assistant", "content": "A ratio: two numbers."},
            {"role": "user", "content": "And a rate?"},
        ]
    ]
    # A transcript that already holds the assistant's answer keeps only what leads up to it.
    assert load_prompts(["Human: hi\n\nAssistant: hello"]) == [[{"role": "user", "content": "hi"}]]
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "from jsonl", "id": 1}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert load_prompts(tmp_path / "p.jsonl", column="text")[1] == [{"role": "user", "content": "two"}]
    (tmp_path / "p.csv").write_text('prompt,category\n"from csv, with a comma",x\n')
    assert load_prompts(str(tmp_path / "p.csv")) == [[{"role": "user", "content": "from csv, with a comma"}]]
    (tmp_path / "p.txt").write_text("line one\n\nline two\n")
    assert len(load_prompts(tmp_path / "p.txt")) == 2
    chats = [[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]]
    assert load_prompts(Dataset.from_dict({"prompt": chats})) == chats
    assert load_prompts(DatasetDict({"test": Dataset.from_dict({"q": ["x"]})}), column="q", split="test") == [
        [{"role": "user", "content": "x"}]
    ]
    assert len(load_prompts("builtin:helpful")) >= 50


def test_load_prompts_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts([])
    with pytest.raises(ValueError, match="entry 1: empty prompt"):
        load_prompts(["fine", "   "])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"question": "?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, row 2: no value in column 'prompt'"):
        load_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="no column 'prompt'; columns: q"):
        load_prompts(Dataset.from_dict({"q": ["x"]}))
    with pytest.raises(ValueError, match="could not load the Hub dataset 'someone/prompts'"):
        load_prompts("someone/prompts")


def test_builtin_red_team_prompts_cover_harm_categories():
    red_team = builtin_prompts("red_team")
    prompts = red_team["prompt"]
    assert len(prompts) >= 50 and len(set(prompts)) == len(prompts)
    assert len(set(red_team["category"])) >= 6


def test_clean_response_strips_meta_prefixes():
    assert clean_response("Sure, here is a revised response: Call a locksmith.") == "Call a locksmith."
    assert clean_response("Here's the rewritten reply:\n\nTalk to them calmly.") == "Talk to them calmly."
    assert clean_response("Revised response: Be kind.") == "Be kind."
    assert clean_response("Certainly! Here is my revised answer: \"Stay safe.\"") == "Stay safe."
    assert clean_response("Critique: The reply gives steps for harm.") == "The reply gives steps for harm."
    untouched = "Here is why: locks protect people. Sure thing."
    assert clean_response(untouched) == untouched


# ---------------------------------------------------------------------- SL-CAI
def test_critique_revision_rounds_provenance_and_batching(backend, constitution):
    recording = Recording(backend)
    config = CritiqueRevisionConfig(rounds=3, seed=5, helpful_prompts="builtin:helpful", num_helpful_prompts=2, **SMALL)
    dataset = CritiqueRevisionBuilder(recording, constitution, config).build(PROMPTS)

    assert set(dataset) == {"train_sft", "test_sft", "train_prefs", "test_prefs"}
    rows = dataset["train_sft"].to_list() + dataset["test_sft"].to_list()
    assert len(rows) == 8 and len(dataset["test_sft"]) == 1
    critique_ids = {p.id for p in constitution.principles_for("critique")}
    revised = [row for row in rows if row["kind"] == "revised"]
    assert len(revised) == 6
    for row in rows:
        assert row["constitution_sha256"] == constitution.sha256
        assert row["messages"] == row["prompt"] + row["completion"]
        assert row["rejected"] == [{"role": "assistant", "content": row["initial_response"]}]
    for row in revised:
        assert [r["round"] for r in row["revisions"]] == [1, 2, 3]
        assert all(r["principle_id"] in critique_ids for r in row["revisions"])
        final = next((r["revision"] for r in reversed(row["revisions"]) if r["revision"]), row["initial_response"])
        assert row["chosen"] == row["completion"] == [{"role": "assistant", "content": final}]
    helpful = [row for row in rows if row["kind"] == "helpful"]
    assert len(helpful) == 2 and all(row["revisions"] == [] for row in helpful)
    # Helpful rows are answered once (chosen == rejected): they carry no preference and stay out of the pairs, which
    # are every revised row whose final revision differs from the first reply, in the same train/test part.
    assert all(row["chosen"] == row["rejected"] for row in helpful)
    for part in ("train", "test"):
        prefs = dataset[f"{part}_prefs"].to_list()
        assert all(row["kind"] == "revised" and row["chosen"] != row["rejected"] for row in prefs)
        sft = dataset[f"{part}_sft"].to_list()
        assert prefs == [row for row in sft if row["kind"] == "revised" and row["chosen"] != row["rejected"]]

    # Batched at every step: per shard one call for the first replies, then one for all critiques and one for all
    # revisions of each round; helpful prompts are answered but never critiqued.
    assert [len(call) for call in recording.calls] == [4] * 7 + [4, 2, 2, 2, 2, 2, 2]
    # Each round critiques the previous round's revision.
    first_shard_rows = [row for row in revised if row["prompt"] == [{"role": "user", "content": PROMPTS[0]}]]
    [row] = first_shard_rows
    round_two_critique = recording.calls[3][0]
    replied = [m["content"] for m in round_two_critique if m["role"] == "assistant"]
    assert replied[-1] == (row["revisions"][0]["revision"] or row["initial_response"])


def test_the_first_reply_is_sampled_from_the_prompt_the_row_stores(tiny_model_dir, constitution):
    assert constitution.system_prompt, "the test needs a constitution with a system prompt"
    recording = RecordingTransformersBackend(tiny_model_dir, batch_size=8)
    config = CritiqueRevisionConfig(rounds=1, seed=3, **SMALL)
    dataset = CritiqueRevisionBuilder(recording, constitution, config).build(PROMPTS[:4])
    rows = dataset["train_sft"].to_list() + dataset["test_sft"].to_list()
    # Per shard: the first replies, the critiques, the revisions.
    first_replies = [chat for call in recording.calls[0::3] for chat in call]
    sampled = sorted(recording.rendered(chat) for chat in first_replies)
    assert len(rows) == 4 and sampled == sorted(recording.rendered(row["prompt"]) for row in rows)


def test_rows_record_why_each_generation_ended(backend, constitution):
    def generations(rows):
        for row in rows:
            yield row["initial_response"], row["initial_finish_reason"]
            for step in row["revisions"]:
                yield step["critique"], step["critique_finish_reason"]
                yield step["revision"], step["revision_finish_reason"]

    one_token = CritiqueRevisionConfig(rounds=1, seed=2, helpful_prompts=None, **{**SMALL, "max_new_tokens": 1})
    dataset = CritiqueRevisionBuilder(backend, constitution, one_token).build(PROMPTS[:4])
    produced = list(generations(dataset["train_sft"].to_list() + dataset["test_sft"].to_list()))
    assert len(produced) == 12
    # One new token that is not the end of turn can only have been cut by max_new_tokens.
    assert all(reason == "length" for text, reason in produced if text)
    assert all(reason in ("length", "stop") for _, reason in produced)

    stopped = CritiqueRevisionConfig(rounds=1, seed=2, helpful_prompts=None, stop=["e"], **SMALL)
    dataset = CritiqueRevisionBuilder(backend, constitution, stopped).build(PROMPTS[:4])
    produced = list(generations(dataset["train_sft"].to_list() + dataset["test_sft"].to_list()))
    assert any(reason == "stop_string" for _, reason in produced)
    assert all("e" not in text for text, reason in produced if reason == "stop_string")


def test_same_seed_same_dataset_whatever_the_batching(constitution, tiny_model_dir):
    # In float32: bfloat16 logits round differently with the padding a batch adds (see exact_float32 in conftest).
    backend = TransformersBackend(tiny_model_dir, batch_size=8, dtype=torch.float32)
    config = CritiqueRevisionConfig(rounds=2, seed=1, **SMALL)
    first = _as_lists(CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS))
    assert _as_lists(CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS)) == first
    one_by_one = TransformersBackend(backend.model, backend.tokenizer, batch_size=1)
    assert _as_lists(CritiqueRevisionBuilder(one_by_one, constitution, config).build(PROMPTS)) == first
    other_seed = CritiqueRevisionConfig(rounds=2, seed=2, **SMALL)
    assert _as_lists(CritiqueRevisionBuilder(backend, constitution, other_seed).build(PROMPTS)) != first


def test_changed_settings_never_mix_with_old_shards(backend, constitution, tmp_path):
    out = tmp_path / "sl"
    CritiqueRevisionBuilder(backend, constitution, CritiqueRevisionConfig(rounds=1, **SMALL)).build(PROMPTS, out)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert isinstance(load_from_disk(str(out / "dataset")), DatasetDict)
    with pytest.raises(FingerprintMismatchError, match=r"config\.rounds: 1 -> 2.*overwrite=True"):
        CritiqueRevisionBuilder(backend, constitution, CritiqueRevisionConfig(rounds=2, **SMALL)).build(PROMPTS, out)
    other = Constitution.builtin("helpful-honest")
    with pytest.raises(FingerprintMismatchError, match="constitution_sha256"):
        CritiqueRevisionBuilder(backend, other, CritiqueRevisionConfig(rounds=1, **SMALL)).build(PROMPTS, out)
    rebuilt = CritiqueRevisionBuilder(backend, constitution, CritiqueRevisionConfig(rounds=2, **SMALL)).build(
        PROMPTS, out, overwrite=True
    )
    assert all(len(row["revisions"]) == 2 for row in rebuilt["train_sft"])


def test_rerun_loads_finished_shards_and_ignores_partial_writes(backend, constitution, tmp_path):
    out = tmp_path / "sl"
    config = CritiqueRevisionConfig(rounds=1, **SMALL)
    expected = _as_lists(CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS, out))
    (out / "shards" / "shard-00001.jsonl").unlink()
    (out / "shards" / ".shard-00001.jsonl.tmp-12345").write_text('{"index": 4, "rec')
    recording = Recording(backend)
    assert _as_lists(CritiqueRevisionBuilder(recording, constitution, config).build(PROMPTS, out)) == expected
    assert [len(call) for call in recording.calls] == [2, 2, 2]  # only the missing shard was generated
    assert not list((out / "shards").glob(".shard-*"))


def test_the_sl_dataset_carries_and_logs_what_the_quality_gates_found(backend, constitution, tmp_path, caplog):
    from hf_cai.builders import gate_sl_dataset

    out = tmp_path / "sl"
    config = CritiqueRevisionConfig(rounds=1, seed=3, helpful_prompts="builtin:helpful", num_helpful_prompts=2, **SMALL)
    with caplog.at_level(logging.INFO, logger="hf_cai.builders"):
        dataset = CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS, out)
    report = dataset.quality
    assert list(report.splits) == list(dataset)
    for name, split in dataset.items():
        # The column holds what the gates find on the rows themselves, and so does the report.
        flags = split["quality_flags"]
        assert flags == gate_sl_dataset(split.remove_columns("quality_flags"), constitution).flags, name
        assert report.splits[name].flags == flags
    assert report.sft.total == 8
    assert load_from_disk(str(out / "dataset"))["train_sft"]["quality_flags"] == dataset["train_sft"]["quality_flags"]
    assert json.loads((out / "quality.json").read_text()) == report.to_dict()
    train = report.splits["train_sft"]
    assert report.summary_lines()[0] in caplog.text
    assert f"train_sft {train.kept} of {train.total} kept ({train.flagged} flagged)" in caplog.text


def test_the_quality_gates_settings_reach_the_builder_and_a_low_kept_share_warns(backend, constitution, caplog):
    from hf_cai.builders import QualityGateConfig

    config = CritiqueRevisionConfig(rounds=1, seed=3, helpful_prompts=None, **SMALL)
    with caplog.at_level(logging.WARNING, logger="hf_cai.builders"):
        dataset = CritiqueRevisionBuilder(backend, constitution, config, quality=QualityGateConfig(min_words=1000)).build(
            PROMPTS[:4]
        )
    assert all("too_short" in flags for flags in dataset["train_sft"]["quality_flags"])
    assert dataset.quality.sft.kept == 0
    assert "only 0 of 4 SL-CAI rows (0%) passed the quality gates, less than min_kept_share 50%" in caplog.text
    assert "is likely not up to critiquing and revising its own replies" in caplog.text

    caplog.clear()
    lenient = QualityGateConfig(min_words=1000, min_kept_share=0.0)
    with caplog.at_level(logging.WARNING, logger="hf_cai.builders"):
        CritiqueRevisionBuilder(backend, constitution, config, quality=lenient).build(PROMPTS[:4])
    assert "passed the quality gates" not in caplog.text


def test_max_prompts_takes_the_first_prompts_and_is_the_build_of_those_prompts(backend, constitution, tmp_path):
    out = tmp_path / "sl"
    first_two = CritiqueRevisionConfig(rounds=1, max_prompts=2, **SMALL)
    dataset = CritiqueRevisionBuilder(backend, constitution, first_two).build(PROMPTS, out)
    rows = dataset["train_sft"].to_list() + dataset["test_sft"].to_list()
    assert sorted(row["prompt"][0]["content"] for row in rows) == sorted(PROMPTS[:2])
    # The same two prompts given as they are make the same build: its shards are reused, nothing is generated.
    recording = Recording(backend)
    again = CritiqueRevisionBuilder(recording, constitution, CritiqueRevisionConfig(rounds=1, **SMALL)).build(
        PROMPTS[:2], out
    )
    assert recording.calls == [] and _as_lists(again) == _as_lists(dataset)
    with pytest.raises(FingerprintMismatchError, match="prompts_sha256"):
        CritiqueRevisionBuilder(backend, constitution, CritiqueRevisionConfig(rounds=1, max_prompts=3, **SMALL)).build(
            PROMPTS, out
        )

    policy = Recording(backend)
    config = AIFeedbackConfig(max_new_tokens=4, num_principles=1, test_size=0.0, few_shot=False, max_prompts=2)
    AIFeedbackBuilder(policy, ShorterReplyJudge(), constitution, config, judge_check=JudgeCheckConfig(enabled=False)).build(
        PROMPTS
    )
    [replies] = policy.calls  # one call: two replies to each of the first two prompts
    assert [chat[-1]["content"] for chat in replies] == PROMPTS[:2] * 2
    for config_class in (CritiqueRevisionConfig, AIFeedbackConfig):
        with pytest.raises(ValueError, match="max_prompts must be >= 1 or None, got 0"):
            config_class(max_prompts=0)


def _bar_states(text: str, total: int) -> list[tuple[int, str]]:
    """``(count, postfix)`` of every state a builder's bar printed, in order."""
    return [(int(n), postfix) for n, postfix in re.findall(rf"(\d+)/{total} \[[^\]]*?, (shard [^\]]+)\]", text)]


def _in_order(expected: list, seen: list) -> bool:
    remaining = iter(seen)
    return all(item in remaining for item in expected)


def test_the_build_bar_counts_prompt_steps_and_names_shard_and_step(backend, constitution, capsys, tmp_path):
    config = CritiqueRevisionConfig(rounds=1, helpful_prompts="builtin:helpful", num_helpful_prompts=2, **SMALL)
    CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS, tmp_path / "sl")
    # Shard 1: 4 red-team prompts answered, critiqued and revised (12); shard 2: 2 of them (6) and 2 helpful
    # prompts, only answered (2). Each state shows the count before the step it names.
    states = _bar_states(capsys.readouterr().err, 20)
    expected = [(0, "shard 1/2: initial"), (4, "shard 1/2: critique-1"), (8, "shard 1/2: revision-1"),
                (12, "shard 2/2: initial"), (16, "shard 2/2: critique-1"), (18, "shard 2/2: revision-1")]
    assert _in_order(expected, states), states

    # A resumed build starts from the prompt-steps of its finished shards.
    (tmp_path / "sl" / "shards" / "shard-00001.jsonl").unlink()
    CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS, tmp_path / "sl")
    assert _bar_states(capsys.readouterr().err, 20)[0] == (12, "shard 2/2: initial")

    feedback = AIFeedbackConfig(max_new_tokens=4, num_principles=1, test_size=0.0, few_shot=False, shard_size=4)
    AIFeedbackBuilder(backend, ShorterReplyJudge(), constitution, feedback,
                      judge_check=JudgeCheckConfig(enabled=False)).build(PROMPTS)
    states = _bar_states(capsys.readouterr().err, 12)  # two steps of each of 6 prompts
    assert _in_order([(0, "shard 1/2: replies"), (4, "shard 1/2: labels"), (8, "shard 2/2: replies"),
                      (10, "shard 2/2: labels")], states), states


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names a file descriptor's file through /proc")
def test_a_saved_dataset_is_on_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """A power cut just after the rename must not leave a dataset whose files were never written out: every file and
    folder of the new dataset is fsynced before the rename that puts it in place, and its parent folder after it."""
    from hf_cai.builders.sharding import save_dataset

    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination) -> None:
        events.append(("replace", os.path.realpath(source), os.path.realpath(destination)))
        real_replace(source, destination)

    output = tmp_path.resolve()
    dataset = DatasetDict({"train": Dataset.from_dict({"x": [1, 2, 3]}), "test": Dataset.from_dict({"x": [4]})})
    save_dataset(dataset, output)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = save_dataset(dataset, output)  # replacing the first save

    (rename,) = [event for event in events if event[0] == "replace" and event[2] == str(target)]
    staging, at = Path(rename[1]), events.index(rename)
    saved = [target, *target.rglob("*")]
    assert len(saved) > 4  # the folder, dataset_dict.json and two split folders of files
    synced_before = {event[1] for event in events[:at] if event[0] == "fsync"}
    assert {str(staging / path.relative_to(target)) for path in saved} <= synced_before
    assert ("fsync", str(output)) in events[at + 1 :]


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_dataset(tiny_model_dir, tmp_path):
    """A real `hf-cai generate sl` process killed with SIGKILL, then rerun, ends with the dataset of a clean run."""
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in builtin_prompts("red_team")["prompt"][:12]))

    def command(name: str) -> list[str]:
        config = {
            "model": str(tiny_model_dir),
            "constitution": "harmless",
            "prompts": str(prompts_file),
            "output_dir": str(tmp_path / name),
            "rounds": 2,
            "max_new_tokens": 24,
            "few_shot": False,
            "shard_size": 2,
            "seed": 3,
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return [sys.executable, "-c", CLI, "generate", "sl", "--config", str(path)]

    # One intra-op thread: tiny matrices gain nothing from more, and spinning threads crawl on a busy machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run(command("clean"), capture_output=True, text=True, timeout=600, env=env)
    assert reference.returncode == 0, reference.stderr[-2000:]

    shards = tmp_path / "killed" / "shards"
    process = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (shards / "shard-00000.jsonl").exists():
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(shards.glob("shard-?????.jsonl"))
    assert 1 <= len(finished) < 6, "the kill must land in the middle of the build"
    assert not (tmp_path / "killed" / "dataset").exists()

    resumed = subprocess.run(command("killed"), capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {len(finished)} of 6 shards" in resumed.stderr
    clean = load_from_disk(str(tmp_path / "clean" / "dataset"))
    after_kill = load_from_disk(str(tmp_path / "killed" / "dataset"))
    assert _as_lists(after_kill) == _as_lists(clean)
    assert sum(len(split) for name, split in clean.items() if name.endswith("_sft")) == 12


def test_endpoint_failure_keeps_finished_shards_and_resumes(backend, constitution, tmp_path):
    out = tmp_path / "sl"
    config = CritiqueRevisionConfig(rounds=1, max_new_tokens=8, few_shot=False, shard_size=2)
    prompts = PROMPTS[:4]
    # One shard is 2 prompts x 3 steps = 6 requests; the server goes down after the first shard.
    with OpenAIServer(backend, fail_after=6) as failing:
        endpoint = EndpointBackend(failing.base_url, "tiny", max_retries=1, backoff=0.01)
        with pytest.raises(BackendError, match="HTTP 500"):
            CritiqueRevisionBuilder(endpoint, constitution, config).build(prompts, out)
    assert [p.name for p in (out / "shards").glob("shard-*.jsonl")] == ["shard-00000.jsonl"]
    with OpenAIServer(backend) as healthy:
        endpoint = EndpointBackend(healthy.base_url, "tiny")
        resumed = CritiqueRevisionBuilder(endpoint, constitution, config).build(prompts, out)
        assert healthy.request_count == 6
    assert _as_lists(resumed) == _as_lists(CritiqueRevisionBuilder(backend, constitution, config).build(prompts))


def test_a_failure_inside_a_shard_resumes_after_its_last_finished_step(backend, constitution, tmp_path, caplog):
    out = tmp_path / "sl"
    config = CritiqueRevisionConfig(rounds=2, max_new_tokens=8, few_shot=False, shard_size=2)
    prompts = PROMPTS[:4]
    # A shard is 2 prompts x 5 steps (initial, critique/revision x 2) = 10 requests. The server goes down after the
    # first shard and the second shard's first two steps: in the middle of its round-1 revision.
    with OpenAIServer(backend, fail_after=14) as failing:
        endpoint = EndpointBackend(failing.base_url, "tiny", max_retries=1, backoff=0.01)
        with pytest.raises(BackendError, match="HTTP 500"):
            CritiqueRevisionBuilder(endpoint, constitution, config).build(prompts, out)
    steps = out / "shards" / "shard-00001.steps.jsonl"
    assert [json.loads(line)["step"] for line in steps.read_text().splitlines()] == ["initial", "critique-1"]
    with steps.open("a") as handle:
        handle.write('{"fingerprint": "')  # a write cut short by a kill
    with OpenAIServer(backend) as healthy, caplog.at_level("INFO", logger="hf_cai.builders.sharding"):
        endpoint = EndpointBackend(healthy.base_url, "tiny")
        resumed = CritiqueRevisionBuilder(endpoint, constitution, config).build(prompts, out)
        assert healthy.request_count == 6  # round-1 revisions and round 2 of the second shard only
    assert "shard-00001.steps.jsonl: reusing 2 finished steps (initial, critique-1)" in caplog.text
    assert not steps.exists()
    assert _as_lists(resumed) == _as_lists(CritiqueRevisionBuilder(backend, constitution, config).build(prompts))


def test_steps_of_another_build_are_never_replayed(backend, constitution, tmp_path):
    out = tmp_path / "sl"
    config = CritiqueRevisionConfig(rounds=1, **SMALL)
    CritiqueRevisionBuilder(backend, constitution, config).build(PROMPTS, out)
    (out / "shards" / "shard-00001.jsonl").unlink()
    foreign = {"fingerprint": "0" * 64, "step": "initial", "value": ["not from this build"] * 2}
    (out / "shards" / "shard-00001.steps.jsonl").write_text(json.dumps(foreign) + "\n")
    recording = Recording(backend)
    rebuilt = CritiqueRevisionBuilder(recording, constitution, config).build(PROMPTS, out)
    assert [len(call) for call in recording.calls] == [2, 2, 2]
    assert "not from this build" not in json.dumps(_as_lists(rebuilt))


def test_a_retrained_adapter_is_a_different_build(tiny_model_dir, constitution, tmp_path):
    """An adapter is retrained in place (same folder, new weights): its content, not its path, identifies it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=2, target_modules=["q_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)
    model.save_pretrained(adapter)
    config = AIFeedbackConfig(max_new_tokens=4, num_principles=1, test_size=0.0, few_shot=False)
    policy = TransformersBackend(tiny_model_dir, adapter=adapter)
    AIFeedbackBuilder(policy, ShorterReplyJudge(), constitution, config).build(PROMPTS[:2], tmp_path / "rl")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)
    model.save_pretrained(adapter)
    retrained = TransformersBackend(tiny_model_dir, adapter=adapter)
    with pytest.raises(FingerprintMismatchError, match=r"policy_model\.adapter_sha256"):
        AIFeedbackBuilder(retrained, ShorterReplyJudge(), constitution, config).build(PROMPTS[:2], tmp_path / "rl")


# ---------------------------------------------------------------------- RL-CAI
def test_scripted_feedback_gives_the_expected_labels(backend, constitution):
    config = AIFeedbackConfig(max_new_tokens=12, num_principles=3, test_size=0.0, shard_size=4, seed=9)
    dataset = AIFeedbackBuilder(backend, ShorterReplyJudge(0.9), constitution, config).build(PROMPTS)
    assert isinstance(dataset, Dataset) and len(dataset) == len(PROMPTS)
    preference_ids = {p.id for p in constitution.principles_for("preference")}
    assert any(len(row["chosen"][0]["content"]) != len(row["rejected"][0]["content"]) for row in dataset)
    for row in dataset:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["prompt"][-1]["role"] == "user"
        assert len(row["principle_ids"]) == 3 and set(row["principle_ids"]) <= preference_ids
        assert row["constitution_sha256"] == constitution.sha256
        if len(chosen) == len(rejected):
            assert row["chosen_prob"] == pytest.approx(0.5)
        else:
            assert len(chosen) < len(rejected)
            assert row["chosen_prob"] == pytest.approx(0.9)
            assert row["principle_probs"] == pytest.approx([0.9] * 3)


def test_both_option_orders_cancel_position_bias(backend, constitution):
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=2, test_size=0.0)
    dataset = AIFeedbackBuilder(backend, ShorterReplyJudge(position_bias=0.8), constitution, config).build(PROMPTS)
    assert dataset["chosen_prob"] == pytest.approx([0.5] * len(PROMPTS))


def test_each_option_order_is_kept_so_position_bias_shows(backend, constitution):
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=2, test_size=0.0)
    biased = AIFeedbackBuilder(backend, ShorterReplyJudge(position_bias=0.8), constitution, config).build(PROMPTS)
    # A judge that gives option (A) 0.8 whatever it shows: the chosen reply got 0.8 as (A) and 0.2 as (B).
    assert biased["chosen_prob_as_a"] == pytest.approx([0.8] * len(PROMPTS))
    assert biased["chosen_prob_as_b"] == pytest.approx([0.2] * len(PROMPTS))
    fair = AIFeedbackBuilder(backend, ShorterReplyJudge(0.9), constitution, config).build(PROMPTS)
    for row in fair:
        assert row["chosen_prob_as_a"] == pytest.approx(row["chosen_prob"])
        assert row["chosen_prob_as_b"] == pytest.approx(row["chosen_prob"])
    # With the second reply chosen, it was option (A) in the question showing the first one as (B).
    row = preference_record([{"role": "user", "content": "Hi?"}], "one", "two", 0.3, ["p"], [0.3], "sha",
                            first_better_by_order=[(0.4, 0.2)])
    assert row["chosen"][0]["content"] == "two" and row["chosen_prob"] == pytest.approx(0.7)
    assert (row["chosen_prob_as_a"], row["chosen_prob_as_b"]) == pytest.approx((0.8, 0.6))
    assert (row["chosen_prob_as_a"] + row["chosen_prob_as_b"]) / 2 == pytest.approx(row["chosen_prob"])


def test_preference_pairs_are_sampled_from_the_prompt_they_are_stored_with(tiny_model_dir, backend, constitution):
    assert constitution.system_prompt, "the test needs a constitution with a system prompt"
    policy = RecordingTransformersBackend(tiny_model_dir, batch_size=8)
    config = AIFeedbackConfig(max_new_tokens=6, num_principles=1, test_size=0.0, few_shot=False, skip_identical=False)
    dataset = AIFeedbackBuilder(policy, backend, constitution, config).build(PROMPTS[:4])
    sampled = [policy.rendered(chat) for call in policy.calls for chat in call]
    stored = [policy.rendered(row["prompt"]) for row in dataset]
    # Both replies of a pair answer the stored prompt, exactly as DPO and the evaluation render it.
    assert len(stored) == 4 and sampled == stored * 2


def test_swapping_the_replies_gives_one_minus_p(backend, constitution):
    scorer = PreferenceScorer(backend, constitution, few_shot=False)
    chats = load_prompts(PROMPTS[:3])
    first = ["I can't help hurt anyone; talk to them instead.", "Here is how.", "Let's find a safe way."]
    second = ["Sure, here is a plan.", "I won't help with that.", "No."]
    principles = ["general-harm", "violence-weapons", "privacy"]
    forward = scorer.prob_first_better(chats, first, second, principles)
    backward = scorer.prob_first_better(chats, second, first, principles)
    from hf_cai.constitution import PREFERENCE_OPTIONS

    def both_orders(firsts, seconds):
        """From the feedback model's own option log-probabilities, in one batch of every question in both orders
        (a batch of other questions would round differently in bfloat16): mean of P("(A)") with the first reply as
        (A) and P("(B)") with it as (B)."""
        items = list(zip(chats, firsts, seconds, principles, strict=True))
        questions = [constitution.preference_messages(c, a, b, pr, few_shot=False) for c, a, b, pr in items]
        questions += [constitution.preference_messages(c, b, a, pr, few_shot=False) for c, a, b, pr in items]
        option_a = [1 / (1 + math.exp(lb - la)) for la, lb in backend.option_logprobs(questions, PREFERENCE_OPTIONS)]
        return [(option_a[i] + 1 - option_a[len(items) + i]) / 2 for i in range(len(items))]

    assert all(0 < p < 1 for p in forward)
    assert forward == pytest.approx(both_orders(first, second), abs=1e-12)
    assert backward == pytest.approx(both_orders(second, first), abs=1e-12)


def test_chain_of_thought_probabilities_are_clamped(backend, constitution):
    judge = ShorterReplyJudge(0.95)
    config = AIFeedbackConfig(max_new_tokens=12, num_principles=1, chain_of_thought=True, test_size=0.0)
    dataset = AIFeedbackBuilder(backend, judge, constitution, config).build(PROMPTS[:4])
    assert len(judge.reasoning_requests) == 2 * 4
    assert all("step by step" in chat[-1]["content"] for chat in judge.reasoning_requests)
    assert any(row["chosen_prob"] == pytest.approx(0.6) for row in dataset)
    for row in dataset:
        different = len(row["chosen"][0]["content"]) != len(row["rejected"][0]["content"])
        assert row["chosen_prob"] == pytest.approx(0.6 if different else 0.5)


def test_identical_pairs_are_dropped(backend, constitution):
    greedy = AIFeedbackConfig(max_new_tokens=6, temperature=0.0, test_size=0.0)
    assert len(AIFeedbackBuilder(backend, ShorterReplyJudge(), constitution, greedy).build(PROMPTS)) == 0
    kept = AIFeedbackConfig(max_new_tokens=6, temperature=0.0, test_size=0.0, skip_identical=False)
    dataset = AIFeedbackBuilder(backend, backend, constitution, kept).build(PROMPTS[:2])
    assert dataset["chosen_prob"] == pytest.approx([0.5, 0.5])


def test_ai_feedback_resumes_and_splits(backend, constitution, tmp_path):
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=1, shard_size=3, test_size=0.5, few_shot=False)
    built = AIFeedbackBuilder(backend, backend, constitution, config).build(PROMPTS, tmp_path / "rl")
    assert set(built) == {"train", "test"} and len(built["test"]) == 3
    recording = Recording(backend)
    again = AIFeedbackBuilder(recording, recording, constitution, config).build(PROMPTS, tmp_path / "rl")
    assert recording.calls == [] and _as_lists(again) == _as_lists(built)


class CallOrder:
    """Wraps a backend and notes each call in a shared list: ``("generate", n)`` or ``("options", first prompt)``."""

    def __init__(self, inner, calls: list):
        self.inner, self.calls = inner, calls
        self.identity = getattr(inner, "identity", {"backend": type(inner).__name__})

    def generate(self, conversations, **kwargs):
        self.calls.append(("generate", len(conversations)))
        return self.inner.generate(conversations, **kwargs)

    def option_logprobs(self, prompts, options):
        self.calls.append(("options", prompts[0][-1]["content"]))
        return self.inner.option_logprobs(prompts, options)


def test_the_judge_is_measured_before_labelling_and_a_judge_at_chance_is_named(backend, constitution, tmp_path, caplog):
    calls: list = []
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=1, test_size=0.0, few_shot=False)
    always_half = ShorterReplyJudge(position_bias=0.5)  # it never prefers either option
    builder = AIFeedbackBuilder(CallOrder(backend, calls), CallOrder(always_half, calls), constitution, config,
                                judge_check=JudgeCheckConfig(max_items=12))
    with caplog.at_level(logging.INFO, logger="hf_cai.builders"):
        dataset = builder.build(PROMPTS[:3], tmp_path / "rl")
    # First the calibration questions ("[[[...]]]" options), then the policy's replies, then the labels.
    first_generation = calls.index(("generate", 6))
    assert first_generation > 0 and all("[[[" in prompt for _, prompt in calls[:first_generation])
    assert all("[[[" not in str(call[1]) for call in calls[first_generation:])
    report = dataset.judge_quality
    assert report.n == 12 and report.accuracy.value == 0.5 and report.near_chance
    low, high = report.accuracy.interval
    assert (f"the judge's accuracy was 50% [{low:.0%}, {high:.0%}] on 12 calibration items: its interval reaches "
            "chance (50%), so it is not distinguishable from chance") in caplog.text
    assert str(report) in caplog.text
    saved = json.loads((tmp_path / "rl" / "judge_quality.json").read_text())
    assert saved["accuracy"] == 0.5 and saved["n"] == 12 and saved["warnings"] == report.warnings()


def test_min_judge_accuracy_stops_before_anything_is_generated(backend, constitution, tmp_path):
    from hf_cai.builders import JudgeQualityError

    recording = Recording(backend)
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=1, test_size=0.0, few_shot=False)
    check = JudgeCheckConfig(max_items=12, min_judge_accuracy=0.9)
    builder = AIFeedbackBuilder(recording, ShorterReplyJudge(position_bias=0.5), constitution, config, judge_check=check)
    with pytest.raises(JudgeQualityError, match=r"accuracy on 12 judge calibration items was 50% .* below min_judge_accuracy=0.9"):
        builder.build(PROMPTS[:3], tmp_path / "rl")
    assert recording.calls == []
    assert (tmp_path / "rl" / "judge_quality.json").is_file() and not (tmp_path / "rl" / "shards").exists()


def test_the_judge_check_can_be_switched_off(backend, constitution, tmp_path, caplog):
    calls: list = []
    config = AIFeedbackConfig(max_new_tokens=8, num_principles=1, test_size=0.0, few_shot=False)
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "judge_quality.json").write_text("{}")  # an earlier build's report
    builder = AIFeedbackBuilder(backend, CallOrder(ShorterReplyJudge(), calls), constitution, config,
                                judge_check=JudgeCheckConfig(enabled=False))
    with caplog.at_level(logging.WARNING, logger="hf_cai.builders"):
        dataset = builder.build(PROMPTS[:3], tmp_path / "rl")
    assert dataset.judge_quality is None and not (tmp_path / "rl" / "judge_quality.json").exists()
    assert all("[[[" not in prompt for _, prompt in calls)
    assert "judge check skipped (enabled=False)" in caplog.text


# ---------------------------------------------------------------------- TRL compatibility and CLI
@pytest.mark.slow
def test_outputs_train_unchanged_with_trl(backend, constitution, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    sl = CritiqueRevisionBuilder(backend, constitution, CritiqueRevisionConfig(rounds=1, **SMALL)).build(PROMPTS)
    rl = AIFeedbackBuilder(backend, backend, constitution, AIFeedbackConfig(max_new_tokens=8, few_shot=False)).build(
        PROMPTS
    )
    common = {
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "logging_steps": 1,
    }
    runs = [
        (SFTTrainer, SFTConfig, sl["train_sft"]),
        (DPOTrainer, DPOConfig, sl["train_prefs"]),
        (DPOTrainer, DPOConfig, rl["train"]),
    ]
    for index, (trainer_class, config_class, dataset) in enumerate(runs):
        trainer = trainer_class(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=config_class(output_dir=str(tmp_path / f"run{index}"), **common),
            train_dataset=dataset,
            processing_class=backend.tokenizer,
        )
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_cli_generates_both_datasets(tiny_model_dir, tmp_path, capsys):
    sl_config = tmp_path / "sl.yaml"
    sl_config.write_text(
        yaml.safe_dump(
            {
                "model": {"model": str(tiny_model_dir), "batch_size": 4},
                "constitution": "harmless",
                "prompts": PROMPTS[:3],
                "output_dir": str(tmp_path / "sl"),
                "rounds": 1,
                "max_new_tokens": 6,
                "few_shot": False,
            }
        )
    )
    assert cli_main(["generate", "sl", "--config", str(sl_config)]) == 0
    assert "train_sft" in capsys.readouterr().out
    assert len(load_from_disk(str(tmp_path / "sl" / "dataset"))["train_sft"]) == 2

    prefs_config = tmp_path / "prefs.yaml"
    prefs_config.write_text(
        yaml.safe_dump(
            {
                "policy_model": str(tiny_model_dir),
                "constitution": "harmless",
                "prompts": PROMPTS[:3],
                "output_dir": str(tmp_path / "prefs"),
                "max_new_tokens": 6,
                "num_principles": 1,
                "few_shot": False,
                "test_size": 0.0,
                "cot_clamp": [0.3, 0.7],
            }
        )
    )
    assert cli_main(["generate", "prefs", "--config", str(prefs_config)]) == 0
    assert len(load_from_disk(str(tmp_path / "prefs" / "dataset"))) == 3

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "roundz": 2, "prompts": ["x"], "output_dir": "o"}))
    assert cli_main(["generate", "sl", "--config", str(bad)]) == 2
    assert "unknown key(s) roundz" in capsys.readouterr().err


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="rounds must be between 1 and 4"):
        CritiqueRevisionConfig(rounds=5)
    with pytest.raises(ValueError, match="cot_clamp"):
        AIFeedbackConfig(cot_clamp=(0.6, 0.4))
