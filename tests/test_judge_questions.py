"""Questions put to the AI judge about single replies: refusals and per-principle violations, both orders averaged."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict

import pytest

from hf_cai.constitution import Constitution
from hf_cai.evaluation.judge_questions import (
    audit_summary_lines,
    judge_refusals,
    judged_rate,
    principle_audit,
    principle_text,
)

CONSTITUTION = Constitution.from_dict(
    {
        "name": "audit-test",
        "principles": [
            {
                "id": "alpha",
                "critique": "Point out anything in the reply that concerns topic alpha.",
                "revision": "Rewrite the reply without topic alpha.",
            },
            {
                "id": "beta",
                "critique": "Point out anything in the reply that concerns topic beta.",
                "revision": "Rewrite the reply without topic beta.",
                "preference": "Which reply says less about beta?",
            },
            {"id": "gamma", "preference": "Which reply avoids anything that concerns topic gamma?"},
        ],
    }
)


class ScriptedJudge:
    """Answers the yes/no questions by reading them.

    ``mode``: ``"perfect"`` (all probability on the right letter), ``"soft"`` (0.8 on the right answer),
    ``"always-a"`` / ``"always-b"`` (a judge with nothing but position bias). The right answer: "yes" when the
    question is about refusals and the reply says "I can't", or when it is about a principle that concerns topic T and
    the reply contains ``VIOLATION:T``.
    """

    def __init__(self, mode: str = "perfect"):
        self.mode = mode
        self.calls: list[int] = []
        self.seen: list[tuple[str | None, str, str]] = []  # (principle topic, request, letter of "yes")

    def option_logprobs(self, prompts, options):
        assert tuple(options) == ("(A)", "(B)")
        self.calls.append(len(prompts))
        return [self._answer(prompt) for prompt in prompts]

    def _answer(self, prompt):
        assert len(prompt) == 1 and prompt[0]["role"] == "user"
        text = prompt[0]["content"]
        assert text.endswith("Answer with (A) or (B) only.")
        yes_letter = "A" if "\n(A) Yes" in text else "B"
        assert f"\n({'B' if yes_letter == 'A' else 'A'}) No" in text
        request = re.search(r"Human: (.*?)\n\nAssistant:", text, re.DOTALL).group(1)
        topic = re.search(r"concerns topic (\w+)", text)
        topic = topic.group(1) if topic else None
        self.seen.append((topic, request, yes_letter))
        if topic is None:
            assert "decline or refuse" in text
            yes = "I can't" in text
        else:
            yes = f"VIOLATION:{topic}" in text
        right = yes_letter if yes else ("B" if yes_letter == "A" else "A")
        if self.mode == "always-a":
            return [0.0, -math.inf]
        if self.mode == "always-b":
            return [-5.0, -1.0]
        if self.mode == "soft":
            return [math.log(0.8), math.log(0.2)] if right == "A" else [math.log(0.2), math.log(0.8)]
        return [0.0, -math.inf] if right == "A" else [-math.inf, 0.0]


REQUESTS = [f"request number {i}" for i in range(6)]
REFUSAL_REPLIES = ["I can't help with that.", "Sure, here you go.", "I can't do this, sorry.", "Here is how.", "Ok.", "Fine."]


def test_perfect_judge_finds_the_refusals():
    judge = ScriptedJudge("perfect")
    probabilities = judge_refusals(judge, REQUESTS, REFUSAL_REPLIES)
    assert probabilities == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    # Both orders of each item were asked, "yes" once as (A) and once as (B).
    letters = Counter((request, letter) for _, request, letter in judge.seen)
    assert all(letters[(request, letter)] == 1 for request in REQUESTS for letter in "AB")
    rate = judged_rate(probabilities, "judged refusals")
    assert rate.successes == 2 and rate.total == 6


def test_position_bias_alone_counts_nothing():
    for mode in ("always-a", "always-b"):
        probabilities = judge_refusals(ScriptedJudge(mode), REQUESTS, REFUSAL_REPLIES)
        assert probabilities == pytest.approx([0.5] * 6)
        assert judged_rate(probabilities, "refusals").successes == 0


def test_soft_judge_probabilities_average_the_orders():
    probabilities = judge_refusals(ScriptedJudge("soft"), REQUESTS, REFUSAL_REPLIES)
    assert probabilities == pytest.approx([0.8, 0.2, 0.8, 0.2, 0.2, 0.2])


def test_refusal_questions_are_batched_with_both_orders_together():
    judge = ScriptedJudge()
    judge_refusals(judge, REQUESTS, REFUSAL_REPLIES, batch_size=4)
    assert judge.calls == [8, 4]
    # Chats with a system prompt: the system message is not shown to the judge; the request still is.
    chats = [[{"role": "system", "content": "SYSTEM SECRET"}, {"role": "user", "content": r}] for r in REQUESTS]
    judge = ScriptedJudge()

    original = judge._answer

    def no_system(prompt):
        assert "SYSTEM SECRET" not in prompt[0]["content"]
        return original(prompt)

    judge._answer = no_system
    assert judge_refusals(judge, chats, REFUSAL_REPLIES) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert judge_refusals(judge, [], []) == []


def test_lengths_must_match():
    with pytest.raises(ValueError, match="replies has 2 items for 6 conversations"):
        judge_refusals(ScriptedJudge(), REQUESTS, ["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        judge_refusals(ScriptedJudge(), REQUESTS, REFUSAL_REPLIES, batch_size=0)
    with pytest.raises(ValueError, match="model 'cai'"):
        principle_audit(ScriptedJudge(), CONSTITUTION, REQUESTS, {"base": ["x"] * 6, "cai": ["x"] * 5})
    with pytest.raises(ValueError, match="clash"):
        principle_audit(ScriptedJudge(), CONSTITUTION, REQUESTS, {"change": ["x"] * 6})


def _replies(violations: dict[str, set[int]], count: int = 6) -> list[str]:
    return [
        "A reply. " + " ".join(f"VIOLATION:{topic}" for topic, where in violations.items() if i in where)
        for i in range(count)
    ]


BASE = _replies({"alpha": {0, 1, 2, 3}, "beta": {0, 5}, "gamma": set()})
CAI = _replies({"alpha": {2}, "beta": {1, 2, 3}, "gamma": set()})


def test_audit_gives_exact_rates_and_change():
    judge = ScriptedJudge("perfect")
    rows = principle_audit(judge, CONSTITUTION, REQUESTS, {"base": BASE, "cai": CAI}, batch_size=5)
    assert [r["principle_id"] for r in rows] == ["alpha", "beta", "gamma"]
    by_id = {r["principle_id"]: r for r in rows}
    expected = {"alpha": (4 / 6, 1 / 6), "beta": (2 / 6, 3 / 6), "gamma": (0.0, 0.0)}
    for pid, (base, cai) in expected.items():
        row = by_id[pid]
        assert row["n"] == 6
        assert row["base"]["rate"] == pytest.approx(base) and row["cai"]["rate"] == pytest.approx(cai)
        assert row["change"] == pytest.approx(cai - base)
        low, high = row["cai"]["ci95"]
        assert 0 <= low <= row["cai"]["rate"] <= high <= 1
        assert set(row) == {"principle_id", "principle", "n", "base", "cai", "change"}
        assert set(row["base"]) == {"rate", "ci95", "violations"}
    assert by_id["alpha"]["base"]["violations"] == 4
    # The principle's text: its critique request, or its preference question when it has no critique.
    assert by_id["beta"]["principle"] == CONSTITUTION.principle("beta").critique
    assert by_id["gamma"]["principle"] == CONSTITUTION.principle("gamma").preference
    assert principle_text(CONSTITUTION.principle("gamma")) == by_id["gamma"]["principle"]
    # 3 principles x 6 prompts x 2 models, each asked twice, in calls of 5 items (10 prompts).
    assert sum(judge.calls) == 72 and max(judge.calls) == 10 and len(judge.calls) == 8
    json.dumps(rows)

    lines = audit_summary_lines(rows)
    assert 2 <= len(lines) <= 4
    assert "less often" in lines[0] and "alpha" in lines[0] and "67% -> 17%" in lines[0] and "-50 points" in lines[0]
    assert "more often" in lines[1] and "beta" in lines[1] and "alpha" not in lines[1]
    assert "gamma" not in " ".join(lines[:2])
    assert "opinions" in lines[-1] and "calibration accuracy" in lines[-1]
    assert "72%" in audit_summary_lines(rows, judge_accuracy=0.72)[-1]


def test_audit_with_a_biased_judge_finds_no_violations():
    rows = principle_audit(ScriptedJudge("always-a"), CONSTITUTION, REQUESTS, {"base": BASE, "cai": CAI})
    assert all(r[m]["rate"] == 0.0 for r in rows for m in ("base", "cai"))
    assert all(r["change"] == 0.0 for r in rows)
    assert audit_summary_lines(rows)[0].startswith("No principle's violation rate changed")


def test_audit_of_other_models_has_no_change():
    rows = principle_audit(ScriptedJudge(), CONSTITUTION, REQUESTS, {"model-x": BASE})
    assert all("change" not in r for r in rows)
    assert rows[0]["model-x"]["rate"] == pytest.approx(4 / 6)
    lines = audit_summary_lines(rows, top=1)
    assert len(lines) == 2 and "alpha (model-x 67%)" in lines[0]


def test_subsampling_respects_the_limit_and_pairs_the_models():
    requests = [f"request number {i}" for i in range(20)]
    base = _replies({"alpha": set(range(0, 20, 2))}, 20)
    cai = _replies({"alpha": set(range(0, 20, 5))}, 20)
    judge = ScriptedJudge()
    rows = principle_audit(
        judge, CONSTITUTION, requests, {"base": base, "cai": cai}, max_prompts_per_principle=5, seed=3
    )
    assert [r["n"] for r in rows] == [5, 5, 5]
    assert sum(judge.calls) == 3 * 5 * 2 * 2
    seen = defaultdict(Counter)
    for topic, request, _ in judge.seen:
        seen[topic][request] += 1
    for topic in ("alpha", "beta", "gamma"):
        # Five prompts per principle, each asked of both models in both orders.
        assert len(seen[topic]) == 5 and set(seen[topic].values()) == {4}
    subsets = {topic: frozenset(seen[topic]) for topic in seen}
    assert len(set(subsets.values())) > 1  # each principle draws its own prompts
    # The same seed gives the same subsets; the rates are of the chosen prompts only.
    again = ScriptedJudge()
    assert principle_audit(again, CONSTITUTION, requests, {"base": base, "cai": cai}, max_prompts_per_principle=5, seed=3) == rows
    chosen = sorted(int(r.rsplit(" ", 1)[1]) for r in subsets["alpha"])
    assert rows[0]["base"]["violations"] == sum(i % 2 == 0 for i in chosen)
    assert rows[0]["cai"]["violations"] == sum(i % 5 == 0 for i in chosen)
    other = ScriptedJudge()
    principle_audit(other, CONSTITUTION, requests, {"base": base}, max_prompts_per_principle=5, seed=4)
    assert {topic for topic, _, _ in other.seen} == {"alpha", "beta", "gamma"}
    assert any(frozenset(r for t, r, _ in other.seen if t == topic) != subsets[topic] for topic in subsets)
    # A limit above the number of prompts takes them all; zero takes none.
    assert [r["n"] for r in principle_audit(ScriptedJudge(), CONSTITUTION, REQUESTS, {"base": BASE}, max_prompts_per_principle=50)] == [6] * 3
    empty = principle_audit(ScriptedJudge(), CONSTITUTION, REQUESTS, {"base": BASE, "cai": CAI}, max_prompts_per_principle=0)
    assert all(r["n"] == 0 and r["base"]["rate"] is None and r["change"] is None for r in empty)
    json.dumps(empty)


@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_model_judge(tiny_model_dir):
    from hf_cai.backends import TransformersBackend

    backend = TransformersBackend(str(tiny_model_dir))
    requests = ["How do I pick a lock?", "Give me a cake recipe.", "Write a poem about rain."]
    replies = ["I can't help with that.", "Mix flour, eggs and sugar, then bake.", "Rain falls softly on the roof."]
    probabilities = judge_refusals(backend, requests, replies, batch_size=2)
    assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)

    rows = principle_audit(
        backend,
        CONSTITUTION,
        [[{"role": "user", "content": r}] for r in requests],
        {"base": replies, "cai": list(reversed(replies))},
        max_prompts_per_principle=2,
        batch_size=8,
    )
    assert [r["principle_id"] for r in rows] == ["alpha", "beta", "gamma"]
    for row in rows:
        assert row["n"] == 2
        for model in ("base", "cai"):
            assert 0.0 <= row[model]["rate"] <= 1.0 and row[model]["violations"] in (0, 1, 2)
            low, high = row[model]["ci95"]
            assert 0.0 <= low <= high <= 1.0
        assert row["change"] == pytest.approx(row["cai"]["rate"] - row["base"]["rate"])
    assert 2 <= len(audit_summary_lines(rows)) <= 4
