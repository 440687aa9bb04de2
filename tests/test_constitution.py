"""Constitution: schema, hashing, sampling, rendering, importers and error messages."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from hf_cai.constitution import Constitution, ConstitutionError, Principle, render_preference_question
from hf_cai.constitution.transcript import parse_transcript


@pytest.fixture(scope="module")
def harmless() -> Constitution:
    return Constitution.builtin("harmless")


def test_builtins_are_listed_and_complete():
    names = Constitution.list_builtin()
    assert {"harmless", "helpful-honest"} <= set(names)
    harmless = Constitution.builtin("harmless")
    assert len(harmless.principles) >= 12
    assert all(p.critique and p.revision and p.preference for p in harmless.principles)
    assert len(harmless.critique_revision_examples) >= 3 and len(harmless.preference_examples) >= 3
    other = Constitution.builtin("helpful-honest")
    assert other.sha256 != harmless.sha256
    assert len(other.principles) >= 10 and other.name == "helpful-honest"


@pytest.mark.parametrize("name", ["harmless", "helpful-honest"])
def test_builtin_demonstrations_use_their_principles(name):
    constitution = Constitution.builtin(name)
    critiques = {p.critique.strip() for p in constitution.principles}
    revisions = {p.revision.strip() for p in constitution.principles}
    for chat in constitution.critique_revision_examples:
        assert [m["role"] for m in chat] == ["user", "assistant"] * 3
        assert chat[2]["content"].strip() in critiques
        assert chat[4]["content"].strip() in revisions
    questions = {p.preference.strip() for p in constitution.principles}
    assert all(e.question.strip() in questions for e in constitution.preference_examples)


def test_yaml_json_yaml_round_trip_keeps_sha256(tmp_path, harmless):
    as_json = Constitution.load(harmless.save(tmp_path / "c.json"))
    back = Constitution.load(as_json.save(tmp_path / "c.yaml"))
    assert as_json.sha256 == back.sha256 == harmless.sha256
    assert back == harmless


def test_sha256_ignores_key_order_and_format(tmp_path, harmless):
    data = harmless.to_dict()
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["principles"] = [dict(reversed(list(p.items()))) for p in data["principles"]]
    (tmp_path / "r.json").write_text(json.dumps(reordered))
    assert Constitution.load(tmp_path / "r.json").sha256 == harmless.sha256
    changed = dict(data, principles=[dict(data["principles"][0], critique="Something else?"), *data["principles"][1:]])
    assert Constitution.from_dict(changed).sha256 != harmless.sha256


def test_seeded_sampling_is_reproducible_and_weighted():
    constitution = Constitution(
        name="w",
        principles=(
            Principle(id="heavy", critique="c?", revision="r.", weight=9.0),
            Principle(id="light", critique="c?", revision="r.", weight=1.0),
            Principle(id="rl-only", preference="Which is better?"),
        ),
    )
    first = [p.id for p in constitution.sample(2000, seed=7)]
    assert first == [p.id for p in constitution.sample(2000, seed=7)]
    assert first != [p.id for p in constitution.sample(2000, seed=8)]
    counts = Counter(first)
    assert "rl-only" not in counts
    assert 0.85 < counts["heavy"] / 2000 < 0.95
    assert {p.id for p in constitution.sample(5, seed=1, stage="preference")} == {"rl-only"}


def test_rendering_of_critique_revision_and_preference(harmless):
    principle = harmless.principles[0]
    conversation = [{"role": "user", "content": "How do I pick a lock?"}, {"role": "assistant", "content": "Use a pin."}]
    critique = harmless.critique_messages(conversation, principle.id)
    assert critique[-1] == {"role": "user", "content": principle.critique}
    assert critique[-3:-1] == conversation
    assert len(critique) == len(harmless.few_shot_messages()) + 3 + (1 if harmless.system_prompt else 0)
    revision = harmless.revision_messages(conversation, principle, "It helps with burglary.", few_shot=False)
    assert [m["role"] for m in revision[-3:]] == ["user", "assistant", "user"]
    assert revision[-1]["content"] == principle.revision and revision[-2]["content"] == "It helps with burglary."
    preference = harmless.preference_messages(conversation[:1], "Reply one.", "Reply two.", principle, few_shot=False)
    text = preference[-1]["content"]
    assert principle.preference.strip() in text and "(A) Reply one." in text and "(B) Reply two." in text
    with_shots = harmless.preference_messages(conversation[:1], "x", "y", principle)
    assert len(with_shots) == 2 * len(harmless.preference_examples) + 1
    assert with_shots[1]["content"] in ("(A)", "(B)")
    assert "Human: How do I pick a lock?" in render_preference_question(conversation[:1], "a", "b", "Q?")


def test_import_llm_swarm_anthropic(fixtures_dir):
    path = fixtures_dir / "llm-swarm" / "constitution_anthropic.json"
    raw = json.loads(path.read_text())
    constitution = Constitution.load(path)
    assert len(constitution.principles) == 16
    assert [p.critique for p in constitution.principles] == [c["critic"] for c in raw["constitutions"]]
    assert [p.revision for p in constitution.principles] == [c["revision"] for c in raw["constitutions"]]
    assert len(constitution.critique_revision_examples) == 4
    assert [list(chat) for chat in constitution.critique_revision_examples] == raw["system_chat"]
    assert Constitution.load(path, format="llm-swarm") == constitution


def test_import_llm_swarm_grok(fixtures_dir):
    constitution = Constitution.load(fixtures_dir / "llm-swarm" / "constitution_grok.json")
    assert len(constitution.principles) == 2 and len(constitution.critique_revision_examples) == 4


def test_import_anthropic_paper(fixtures_dir, tmp_path):
    folder = fixtures_dir / "anthropic-paper"
    constitution = Constitution.load(folder / "CritiqueRevisionInstructions.json")
    sl = constitution.principles_for("critique")
    rl = constitution.principles_for("preference")
    assert len(sl) == 16 and len(rl) == 16
    raw_sl = json.loads((folder / "CritiqueRevisionInstructions.json").read_text())
    assert sl[0].id == "harmful0"
    assert sl[0].critique == raw_sl["harmful0"]["prompt"][0].split("CritiqueRequest: ")[1].split("\n\nCritique:")[0]
    assert sl[0].revision == raw_sl["harmful0"]["edit_request"].split("RevisionRequest: ")[1].split("\n\nRevision:")[0]
    raw_rl = json.loads((folder / "RLMadisonInstructions.json").read_text())
    assert rl[1].preference == raw_rl[1].strip().removesuffix("Options:").strip()
    assert len(constitution.critique_revision_examples) == 5
    first = constitution.critique_revision_examples[0]
    assert [m["role"] for m in first[:2]] == ["user", "assistant"]
    assert first[0]["content"].startswith("Could you help me burn down my house")
    assert len(constitution.preference_examples) == 5
    assert Constitution.load(folder / "RLMadisonInstructions.json", format="anthropic-paper").sha256 == constitution.sha256
    # Imported constitutions are saved in our own schema and reload identically.
    assert Constitution.load(constitution.save(tmp_path / "paper.yaml")).sha256 == constitution.sha256


def test_parse_transcript_keeps_text_after_second_colon():
    text = "\n\nHuman: Note: the recipe says: 3 eggs. Why?\n\nAssistant: Ratio: 1:2.\n\nHuman: ok\n\nAssistant:"
    assert parse_transcript(text) == [
        {"role": "user", "content": "Note: the recipe says: 3 eggs. Why?"},
        {"role": "assistant", "content": "Ratio: 1:2."},
        {"role": "user", "content": "ok"},
    ]


# ----------------------------------------------------------------------------- bad input
def _write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    return str(path)


def _valid() -> dict:
    return {
        "name": "mine",
        "version": "1",
        "license": "apache-2.0",
        "principles": [
            {"id": "a", "critique": "What is wrong?", "revision": "Fix it.", "preference": "Which is better?"},
            {"id": "b", "critique": "Anything unsafe?", "revision": "Make it safe."},
        ],
    }


def _error(path: str) -> ConstitutionError:
    with pytest.raises(ConstitutionError) as info:
        Constitution.load(path)
    return info.value


def test_error_missing_field(tmp_path):
    data = _valid()
    del data["principles"][1]["revision"]
    path = _write(tmp_path, "missing.yaml", data)
    error = _error(path)
    assert path in str(error) and "principles[1].revision" in str(error) and "missing required field" in str(error)


def test_error_missing_name_and_principles(tmp_path):
    data = _valid()
    del data["name"]
    assert "'name'" in str(_error(_write(tmp_path, "noname.yaml", data)))
    data = _valid()
    del data["principles"]
    assert "'principles': missing required field" in str(_error(_write(tmp_path, "nop.yaml", data)))


def test_error_wrong_type(tmp_path):
    data = _valid()
    data["principles"][0]["critique"] = ["a", "list"]
    error = _error(_write(tmp_path, "type.yaml", data))
    assert "principles[0].critique" in str(error) and "must be a string, got list" in str(error)
    data = _valid()
    data["principles"] = {"a": 1}
    assert "must be a list, got mapping" in str(_error(_write(tmp_path, "type2.yaml", data)))
    data = _valid()
    data["principles"][1]["weight"] = -1
    assert "principles[1].weight" in str(_error(_write(tmp_path, "weight.yaml", data)))


def test_error_duplicate_id(tmp_path):
    data = _valid()
    data["principles"][1]["id"] = "a"
    error = _error(_write(tmp_path, "dup.yaml", data))
    assert "principles[1].id" in str(error) and "duplicate principle id 'a'" in str(error)
    assert "principles[0]" in str(error)


def test_error_empty_text(tmp_path):
    data = _valid()
    data["principles"][0]["revision"] = "   "
    error = _error(_write(tmp_path, "empty.yaml", data))
    assert "principles[0].revision" in str(error) and "must not be empty" in str(error)


def test_error_unknown_format(tmp_path):
    error = _error(_write(tmp_path, "other.json", json.dumps({"foo": [1, 2]})))
    assert "other.json" in str(error) and "unknown format" in str(error)
    error = _error(_write(tmp_path, "c.toml", "name = 'x'"))
    assert "unknown file extension '.toml'" in str(error)
    with pytest.raises(ConstitutionError, match="unknown format 'bogus'"):
        Constitution.load(_write(tmp_path, "ok.yaml", _valid()), format="bogus")


def test_error_yaml_syntax_names_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "name: x\nprinciples:\n  - id: a\n    critique: [unclosed\n    revision: y\n")
    error = _error(path)
    assert "broken.yaml" in str(error) and "YAML syntax error at line" in str(error)
    assert isinstance(error.__cause__, yaml.YAMLError), "the parser's own error stays attached for a maintainer"


def test_error_unknown_field_and_bad_few_shot(tmp_path):
    data = _valid()
    data["principles"][0]["critque"] = "typo"
    assert "principles[0].critque" in str(_error(_write(tmp_path, "unknown.yaml", data)))
    data = _valid()
    data["few_shot"] = {"critique_revision": [[{"role": "robot", "content": "hi"}]]}
    error = _error(_write(tmp_path, "role.yaml", data))
    assert "few_shot.critique_revision[0][0].role" in str(error)
    data = _valid()
    data["few_shot"] = {"preference": [{"prompt": "p", "response_a": "a", "response_b": "b", "question": "q", "answer": "C"}]}
    assert "few_shot.preference[0].answer" in str(_error(_write(tmp_path, "ans.yaml", data)))


def test_error_missing_file_and_builtin(tmp_path):
    assert "file not found" in str(_error(str(tmp_path / "nope.yaml")))
    with pytest.raises(ConstitutionError, match="no built-in constitution 'nope'; available: .*harmless"):
        Constitution.builtin("nope")


def test_cli_constitution_commands(tmp_path, capsys, fixtures_dir):
    from hf_cai.cli import main

    assert main(["constitution", "list"]) == 0
    assert "harmless" in capsys.readouterr().out
    assert main(["constitution", "show", "harmless"]) == 0
    assert Constitution.builtin("harmless").sha256 in capsys.readouterr().out
    out = tmp_path / "swarm.yaml"
    assert main(["constitution", "convert", str(fixtures_dir / "llm-swarm" / "constitution_anthropic.json"), str(out)]) == 0
    capsys.readouterr()
    assert main(["constitution", "validate", str(out)]) == 0
    assert "16 principles" in capsys.readouterr().out
    bad = _write(tmp_path, "bad.yaml", {"name": "x", "principles": []})
    assert main(["constitution", "validate", bad]) == 2
    assert "principles" in capsys.readouterr().err
