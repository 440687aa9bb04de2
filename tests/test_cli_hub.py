"""``hf-cai hub list | compare`` without the Hub: offline mode named as such, local folders and files compared,
principles paired by their text as well as by their id. In-process, offline, no model."""

from __future__ import annotations

import dataclasses

import pytest

from hf_cai.cli import main
from hf_cai.constitution import Constitution, Principle
from hf_cai.hub.discovery import compare_constitutions, offline_setting

HARMLESS = Constitution.builtin("harmless")
TURN_OFF = "Turn offline mode off (unset HF_HUB_OFFLINE, or set HF_HUB_OFFLINE=0) and run again."


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_offline_mode_is_huggingface_hubs_named_by_the_variable_that_set_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the client read the environment before it changed
    assert offline_setting() is None, "the client is online: so is hf_cai"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert offline_setting() == "HF_HUB_OFFLINE=1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert offline_setting() == "TRANSFORMERS_OFFLINE=1"
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    assert offline_setting() == "HF_HUB_OFFLINE=1"


def test_hub_list_offline_says_offline_mode_is_on(offline, capsys):
    status, out, err = _run(capsys, "hub", "list")
    assert status == 2 and out == ""
    assert (
        "listing models tagged constitutional-ai needs the Hub, but offline mode is on (HF_HUB_OFFLINE=1). "
        + TURN_OFF
    ) in err
    assert "Publishing" not in err and "check the network" not in err.lower()


def test_hub_compare_offline_with_a_hub_id_says_offline_mode_is_on(offline, capsys):
    status, _, err = _run(capsys, "hub", "compare", "harmless", "alice/cai-model")
    assert status == 2
    assert "'alice/cai-model' is not a local constitution file or folder, nor a built-in constitution" in err
    assert "offline mode is on (HF_HUB_OFFLINE=1): the Hub was not asked" in err and TURN_OFF in err
    assert "could not reach the Hub" not in err


def test_hub_compare_two_local_folders_offline(offline, tmp_path, capsys):
    fork = Constitution(
        name="harmless-fork",
        version="1.1",
        principles=(
            *(p for p in HARMLESS.principles if p.id not in ("privacy", "general-harm")),
            dataclasses.replace(HARMLESS.principle("general-harm"), critique="Point out anything harmful in the reply."),
            Principle(id="animal-welfare", preference="Which reply shows more care for animals?"),
        ),
    )
    HARMLESS.save(tmp_path / "sft" / "constitution.yaml")
    fork.save(tmp_path / "publish" / "constitution.yaml")
    status, out, err = _run(capsys, "hub", "compare", str(tmp_path / "sft"), str(tmp_path / "publish"))
    assert status == 0, err
    assert f"A: harmless v1.0  sha256 {HARMLESS.sha256}" in out and f"B: harmless-fork v1.1  sha256 {fork.sha256}" in out
    assert "1 added, 1 removed, 1 changed, 0 renamed" in out
    assert "+ animal-welfare" in out and "- privacy" in out and "~ general-harm (critique)" in out
    # a folder against a constitution file, and a built-in name: identical
    status, out, _ = _run(capsys, "hub", "compare", str(tmp_path / "sft"), "harmless")
    assert status == 0 and "identical (same canonical sha256)" in out
    status, _, err = _run(capsys, "hub", "compare", str(tmp_path / "sft"), "harmles")
    assert status == 2 and "(did you mean 'harmless'?)" in err
    status, _, err = _run(capsys, "hub", "compare", str(tmp_path / "no" / "such" / "folder"), "harmless")
    assert status == 2 and "file not found" in err and "Hub" not in err


def test_llm_swarm_and_paper_pair_by_text_not_by_id(offline, fixtures_dir, capsys):
    swarm = fixtures_dir / "llm-swarm" / "constitution_anthropic.json"
    paper = fixtures_dir / "anthropic-paper" / "CritiqueRevisionInstructions.json"
    diff = compare_constitutions(swarm, paper)
    assert not diff.removed, "every llm-swarm principle is one of the paper's, under another id"
    assert len(diff.changed) == 16 and all(c.matched_by == "text" for c in diff.changed)
    assert all(c.similarity >= 0.8 for c in diff.changed)
    assert {c.id: c.after.id for c in diff.changed}["principle-0"] == "harmful7"
    assert len({c.after.id for c in diff.changed}) == 16
    assert {p.id for p in diff.added} == {f"rl{i}" for i in range(16)}, "the paper's feedback principles"
    status, out, _ = _run(capsys, "hub", "compare", str(swarm), str(paper.parent))
    assert status == 0
    assert "16 added, 0 removed, 16 changed, 0 renamed, 0 unchanged principles (16 paired by their text" in out
    assert "~ principle-0 → harmful7 (matched by text, 95% alike; critique, revision, tags)" in out
    assert "critique: Did the {+assistant's preceding+} response include anything" in out


def test_renumbered_principles_pair_by_normalised_text():
    principles = HARMLESS.principles[:4]
    renumbered = Constitution(
        name="renumbered",
        principles=(
            *(dataclasses.replace(p, id=f"p{i}") for i, p in enumerate(principles[:3])),
            dataclasses.replace(principles[3], id="p3", critique=principles[3].critique.upper().rstrip(".?!")),
        ),
    )
    original = Constitution(name="original", principles=principles)
    diff = compare_constitutions(original, renumbered)
    assert diff.renamed == tuple((p.id, f"p{i}") for i, p in enumerate(principles[:3]))
    assert not diff.added and not diff.removed and not diff.unchanged
    (change,) = diff.changed
    assert (change.id, change.after.id, change.matched_by, change.similarity) == (principles[3].id, "p3", "text", 1.0)
    assert change.fields == ("critique",)
    text = diff.to_text()
    assert f"= {principles[0].id} → p0 (same texts, new id)" in text
    assert f"~ {principles[3].id} → p3 (matched by text, 100% alike; critique)" in text


def test_unlike_principles_do_not_pair():
    a = Constitution(name="a", principles=(Principle(id="x", preference="Which reply is kinder to animals?"),))
    b = Constitution(name="b", principles=(Principle(id="y", preference="Which reply protects privacy better?"),))
    diff = compare_constitutions(a, b)
    assert [p.id for p in diff.removed] == ["x"] and [p.id for p in diff.added] == ["y"] and not diff.changed
