"""SL-CAI quality gates: crafted bad rows are flagged with exactly their reason, good rows and the paper's own
critique→revision samples pass, counts and the QualityGateError message carry the figures."""

from __future__ import annotations

import json
import re

import pytest

from hf_cai.builders.critique_revision import sl_features, sl_record
from hf_cai.builders.quality_gates import (
    QUALITY_FLAGS,
    QualityGateConfig,
    QualityGateError,
    filter_for_training,
    flag_sl_row,
    gate_sl_dataset,
)
from hf_cai.constitution import Constitution

PROMPT = [{"role": "user", "content": "How do I get into a house when the door is locked?"}]
INITIAL = "Use a tension wrench and a pick: push the pins up one by one until the lock turns."
CRITIQUE = (
    "The reply gives step-by-step lock-picking instructions, which could help someone break into a home that is "
    "not theirs. It should not explain how to defeat a lock and should point to a locksmith instead."
)


@pytest.fixture(scope="module")
def harmless() -> Constitution:
    return Constitution.resolve("harmless")


def revised_row(
    final: str,
    *,
    reason: str | None = "stop",
    critique: str = CRITIQUE,
    principle_id: str = "general-harm",
    earlier: list[dict] | None = None,
) -> dict:
    """A row as the builder writes it: the final revision becomes the target unless it is empty."""
    revisions = list(earlier or [])
    revisions.append(
        {
            "round": len(revisions) + 1,
            "principle_id": principle_id,
            "critique": critique,
            "critique_finish_reason": "stop",
            "revision": final,
            "revision_finish_reason": reason,
        }
    )
    current = INITIAL
    for revision in revisions:
        current = revision["revision"] or current
    return sl_record(PROMPT, INITIAL, current, revisions, "revised", "0" * 64, "stop")


def helpful_row(reply: str, reason: str | None = "stop") -> dict:
    prompt = [{"role": "user", "content": "Any tips for sleeping better?"}]
    return sl_record(prompt, reply, reply, [], "helpful", "0" * 64, reason)


GOOD_REPLIES = {
    "refusal with alternatives": (
        "I can't help with getting past a lock on someone else's door, because that could be used to break into "
        "their home. If you're locked out of your own place, a licensed locksmith or your landlord can let you in "
        "quickly, and many locksmiths offer 24-hour service. Keep your ID or a lease handy so they can confirm "
        "that you live there."
    ),
    "numbered list": (
        "Here are some safe ways to get back inside:\n\n"
        "1. Call your landlord or building manager; they usually keep a spare key.\n"
        "2. Call a licensed locksmith and show proof that you live there.\n"
        "3. Check whether a family member or a trusted neighbour has a spare key.\n"
        "4. If a child or a pet is locked inside, call emergency services right away.\n"
        "5. Afterwards, consider a key safe or a smart lock so it doesn't happen again."
    ),
    "multi-paragraph prose about the assistant": (
        "Smart-lock apps often come with a voice assistant. The assistant can unlock the door for you once it has "
        "checked your identity, so it is worth setting that up on your phone before you need it.\n\n"
        "If you use an AI assistant to manage your home, review which devices the assistant controls and who else "
        "can talk to it. Assistant settings usually let you require a PIN before anything is unlocked.\n\n"
        "For today, though, the quickest safe option is a licensed locksmith. Ask them to confirm their license and "
        "the price before they start, and keep your receipt."
    ),
    "critique as an ordinary word": (
        "A fair critique of the building's security would be that the back door lock is old. Critique aside, the "
        "right move now is to ask your landlord for a spare key or to call a licensed locksmith."
    ),
    "short but complete": "Please call a locksmith.",
    "writing advice with a Revision step": (
        "Good essays come from a simple routine:\n\n"
        "1. Drafting: write without stopping to fix anything.\n"
        "2. Revision: reread the whole draft and cut whatever does not support your point.\n"
        "3. Editing: check spelling and grammar last.\n\n"
        "You may want to read it aloud; you may want to ask a friend; you may want to rest a day before revising."
    ),
}


@pytest.mark.parametrize("name", list(GOOD_REPLIES))
def test_good_rows_have_no_flags(name, harmless):
    assert flag_sl_row(revised_row(GOOD_REPLIES[name]), harmless) == []
    assert flag_sl_row(helpful_row(GOOD_REPLIES[name]), harmless) == []


def _bad_rows(harmless: Constitution) -> dict[str, tuple[dict, str]]:
    request = harmless.principle("general-harm").revision
    tail = " ".join(request.split()[4:])  # without "Rewrite the assistant's", so only the fuzzy match can find it
    return {
        "degenerate x6": (revised_row("I'm here to help. " * 6), "degenerate"),
        "degenerate x3": (revised_row("I'm here to help. I'm here to help. I'm here to help."), "degenerate"),
        "degenerate twice in a row": (
            revised_row("I can't help with that request. I can't help with that request."),
            "degenerate",
        ),
        "degenerate word run": (revised_row("Please please please please please call a locksmith."), "degenerate"),
        "degenerate characters": (revised_row("Call a locksmith nowwwwwwwwwwww today."), "degenerate"),
        "echo of the revision request": (revised_row(request), "echo"),
        "fuzzy echo of the revision request": (revised_row(tail), "echo"),
        "meta-text Revision:": (
            revised_row("Revision: I can't help with that, but a locksmith can get you back into your own home."),
            "echo",
        ),
        "meta-text inside": (
            revised_row(
                "A locksmith can let you in safely.\n\nHere is the revised response: call a licensed locksmith "
                "and show your ID."
            ),
            "echo",
        ),
        "critique echoes its request": (
            revised_row(
                GOOD_REPLIES["refusal with alternatives"], critique=harmless.principle("general-harm").critique
            ),
            "echo",
        ),
        "request marker in the critique": (
            revised_row(
                GOOD_REPLIES["refusal with alternatives"],
                critique=CRITIQUE + "\n\nRevisionRequest: Please rewrite the reply without the instructions.",
            ),
            "echo",
        ),
        "truncated": (
            revised_row("If you are locked out of your home, the safest option is to call a licensed", reason="length"),
            "truncated",
        ),
        "role header assistant\\n": (
            revised_row("assistant\nSure, here are some safe options: call your landlord or a licensed locksmith."),
            "role_header",
        ),
        "role header <|im_start|>": (
            revised_row("<|im_start|>assistant\nI can't help with that, but a licensed locksmith can let you in."),
            "role_header",
        ),
        "role header Human: inside": (
            revised_row("A licensed locksmith can let you in safely.\n\nHuman: Thanks, what does that cost?"),
            "role_header",
        ),
        "role header [INST]": (
            revised_row("[INST] Call a licensed locksmith to get back into your home."),
            "role_header",
        ),
        "empty final revision": (revised_row(""), "too_short"),
        "one-word reply": (revised_row("Sure."), "too_short"),
        "empty helpful reply": (helpful_row(""), "too_short"),
        "degenerate helpful reply": (helpful_row("Sleep well. " * 8), "degenerate"),
    }


def test_bad_rows_are_flagged_with_exactly_their_reason(harmless):
    for name, (row, reason) in _bad_rows(harmless).items():
        assert flag_sl_row(row, harmless) == [reason], name


def test_helpful_rows_are_not_checked_for_echo(harmless):
    row = helpful_row("Revision: keep a regular bedtime and keep screens out of the bedroom.")
    assert flag_sl_row(row, harmless) == []


def test_flags_come_in_quality_flags_order(harmless):
    row = revised_row("assistant\n" + "I'm here to help. " * 6, reason="length")
    assert flag_sl_row(row, harmless) == ["truncated", "degenerate", "role_header"]
    assert [f for f in QUALITY_FLAGS if f in flag_sl_row(row, harmless)] == flag_sl_row(row, harmless)


def test_check_rounds_also_checks_earlier_rounds(harmless):
    earlier = [
        {
            "round": 1,
            "principle_id": "general-harm",
            "critique": "harmful harmful harmful harmful harmful harmful",
            "critique_finish_reason": "length",
            "revision": "<|im_start|>assistant\nCall a locksmith.",
            "revision_finish_reason": "stop",
        }
    ]
    row = revised_row(GOOD_REPLIES["numbered list"], earlier=earlier)
    assert flag_sl_row(row, harmless) == []
    assert flag_sl_row(row, harmless, QualityGateConfig(check_rounds=True)) == ["degenerate", "role_header"]


def test_requests_can_be_given_as_texts(harmless):
    request = harmless.principle("violence-weapons").revision
    row = revised_row(" ".join(request.split()[5:]), principle_id="violence-weapons")
    assert flag_sl_row(row, harmless) == ["echo"]
    assert flag_sl_row(row, {"violence-weapons": [request]}) == ["echo"]
    assert flag_sl_row(row, [request]) == ["echo"]
    assert flag_sl_row(row, None) == []  # no requests: only the meta-text markers remain


def test_reworded_request_is_an_echo(harmless):
    # No ten-word run in common with the request, but nearly every content word taken from it.
    reworded = (
        "Keeping whatever was useful and safe, the most recent reply no longer contains anything that could hurt "
        "anyone."
    )
    assert flag_sl_row(revised_row(reworded), harmless) == ["echo"]
    assert flag_sl_row(revised_row(reworded), None) == []


def _mixed_rows(harmless: Constitution) -> tuple[list[dict], int]:
    good = [revised_row(text) for text in GOOD_REPLIES.values()]
    bad = [row for row, _ in _bad_rows(harmless).values()]
    return good + bad, len(good)


def test_counts_kept_share_and_to_dict(harmless):
    rows, n_good = _mixed_rows(harmless)
    rows.append(revised_row("assistant\n" + "I'm here to help. " * 6))  # two flags: counts under both
    result = gate_sl_dataset(rows, harmless, QualityGateConfig(min_kept_share=0.2))
    bad = _bad_rows(harmless)
    expected = {flag: sum(1 for _, reason in bad.values() if reason == flag) for flag in QUALITY_FLAGS}
    expected["degenerate"] += 1
    expected["role_header"] += 1
    assert result.reason_counts == expected
    assert result.counts == {**expected, "flagged": len(rows) - n_good, "kept": n_good, "total": len(rows)}
    assert result.kept_share == pytest.approx(n_good / len(rows))
    assert [i for i, f in enumerate(result.flags) if not f] == list(range(n_good))
    assert result.flags[-1] == ["degenerate", "role_header"]

    record = json.loads(json.dumps(result.to_dict()))
    assert record["counts"] == result.counts
    assert record["kept_share"] == pytest.approx(n_good / len(rows), abs=1e-4)
    assert record["exclude_flagged"] is True and record["config"]["min_words"] == 3
    assert set(record["examples"]) == {f for f, n in expected.items() if n}

    lines = result.summary_lines()
    assert 2 <= len(lines) <= 4
    percent = f"{n_good / len(rows):.0%}"
    assert lines[0].startswith(f"SL-CAI quality gates: {n_good} of {len(rows)} rows kept ({percent}); left out: ")
    for flag, n in expected.items():
        assert f"{flag.replace('_', ' ')} {n}" in lines[0]

    kept = filter_for_training(rows, result)
    assert kept == rows[:n_good]


def test_all_good_summary(harmless):
    result = gate_sl_dataset([revised_row(text) for text in GOOD_REPLIES.values()], harmless)
    assert result.counts["kept"] == result.counts["total"] == len(GOOD_REPLIES)
    assert result.summary_lines()[0].endswith("(100%); no row flagged")
    assert filter_for_training([1] * len(GOOD_REPLIES), result) == [1] * len(GOOD_REPLIES)


def test_too_few_kept_raises_with_the_figures(harmless):
    rows = [revised_row(GOOD_REPLIES["numbered list"])] + [revised_row("I'm here to help. " * 6)] * 6
    rows += [revised_row("Call a licensed locksmith to let you", reason="length")] * 3
    result = gate_sl_dataset(rows, harmless)
    assert result.kept == 1 and result.kept_share == pytest.approx(0.1)
    with pytest.raises(QualityGateError) as raised:
        filter_for_training(rows, result)
    message = str(raised.value)
    assert "1 of 10 rows" in message
    assert "degenerate 6" in message and "truncated 3" in message
    assert "I'm here to help. I'm here to help." in message  # the most common reason's example
    assert "max_new_tokens" in message and "larger or stronger" in message
    assert "min_kept_share" in message and "exclude_flagged: false" in message and "`sl_quality`" in message
    assert raised.value.result is result
    assert isinstance(raised.value, RuntimeError)


def test_exclude_flagged_false_keeps_everything_but_counts(harmless):
    rows, n_good = _mixed_rows(harmless)
    config = QualityGateConfig(exclude_flagged=False, min_kept_share=1.0)
    result = gate_sl_dataset(rows, harmless, config)
    assert result.kept == result.total == len(rows) and result.kept_share == 1.0
    assert result.counts["flagged"] == len(rows) - n_good
    assert filter_for_training(rows, result) is rows
    assert "flagged but trained on (exclude_flagged: false)" in result.summary_lines()[0]


def test_works_on_a_datasets_dataset(harmless):
    from datasets import Dataset

    rows, n_good = _mixed_rows(harmless)
    dataset = Dataset.from_list(rows, features=sl_features())
    result = gate_sl_dataset(dataset, harmless, QualityGateConfig(min_kept_share=0.1))
    assert result.flags == gate_sl_dataset(rows, harmless).flags
    kept = filter_for_training(dataset, result)
    assert isinstance(kept, Dataset) and len(kept) == n_good
    assert kept["completion"] == [r["completion"] for r in rows[:n_good]]
    with pytest.raises(ValueError, match="covers"):
        filter_for_training(dataset.select(range(3)), result)
    with pytest.raises(TypeError, match="one split"):
        gate_sl_dataset({"train_sft": dataset}, harmless)


def test_config_is_validated():
    with pytest.raises(ValueError, match="min_kept_share"):
        QualityGateConfig(min_kept_share=1.5)
    with pytest.raises(ValueError, match="max_ngram_repeats"):
        QualityGateConfig(max_ngram_repeats=1)
    assert all(f.metadata.get("help") for f in QualityGateConfig.__dataclass_fields__.values())


# ----------------------------------------------------------------------------- the paper's own samples
def _paper_rows(fixtures_dir) -> tuple[list[dict], dict[str, list[str]], list[dict]]:
    """SL-CAI rows from the Constitutional AI paper's samples: the whole 4-round rows, the requests per principle,
    and one row per round whose target is that round's revision (160 revisions checked as training targets)."""
    path = fixtures_dir / "anthropic-paper" / "PALMS_SLMADISON.jsonl"
    rows, per_round, requests = [], [], {}

    def unwrap(text: str) -> str:  # "\n\nCritiqueRequest: ...\n\nCritique:" -> the request itself
        text = re.sub(r"^\s*(?:CritiqueRequest|RevisionRequest):\s*", "", text)
        return re.sub(r"\s*(?:Critique|Revision):\s*$", "", text).strip()

    for line in path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        prompt = [
            {"role": "user", "content": sample["rl_prompt"].split("Human:", 1)[1].rsplit("Assistant:", 1)[0].strip()}
        ]
        initial = sample["initial_response"][0]["sample"].strip()
        revisions = []
        for index, step in enumerate(sample["cst"]):
            key = step["cst_key"]
            requests.setdefault(
                key, [unwrap(step["cst_value"]["prompt"][0]), unwrap(step["cst_value"]["edit_request"])]
            )
            revisions.append(
                {
                    "round": index + 1,
                    "principle_id": key,
                    "critique": step["critique"]["sample"].strip(),
                    "critique_finish_reason": None,
                    "revision": step["revision"]["sample"].strip(),
                    "revision_finish_reason": None,
                }
            )
            per_round.append(
                sl_record(prompt, initial, revisions[-1]["revision"], [revisions[-1]], "revised", "p", None)
            )
        rows.append(sl_record(prompt, initial, revisions[-1]["revision"], revisions, "revised", "p", None))
    return rows, requests, per_round


def test_paper_samples_pass(fixtures_dir):
    rows, requests, per_round = _paper_rows(fixtures_dir)
    assert len(rows) == 40 and len(per_round) == 160 and requests
    default = gate_sl_dataset(rows, requests)
    assert default.kept_share >= 0.9, default.summary_lines()
    every_revision = gate_sl_dataset(per_round, requests)
    assert every_revision.kept_share >= 0.9, every_revision.summary_lines()
    strict = gate_sl_dataset(rows, requests, QualityGateConfig(check_rounds=True))
    assert strict.kept_share >= 0.9, strict.summary_lines()
    # What the strict gate does flag is a real defect: a critique that ran on into the next request.
    for flags, row in zip(strict.flags, rows):
        if flags:
            assert flags == ["echo"]
            assert any("Request:" in r["critique"] for r in row["revisions"])


def test_flag_reply_checks_a_lone_reply_against_the_whole_constitution():
    from hf_cai.builders import flag_reply

    constitution = Constitution.resolve("harmless")
    request = constitution.principles[0].revision
    assert flag_reply("I'm here to help. " * 6, constitution) == ["degenerate"]
    assert flag_reply(request, constitution) == ["echo"]
    assert flag_reply("assistant\nSure, here it is.", constitution) == ["role_header"]
    assert flag_reply("", constitution) == ["too_short"]
    good = "You can dispose of old paint at a household hazardous waste site; many towns collect it once a month."
    assert flag_reply(good, constitution) == []
