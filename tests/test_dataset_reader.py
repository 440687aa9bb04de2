"""The one reader of prompts, evaluation sets and training data: local files by type, saved folders, Hub ids."""

import json

import pytest
from datasets import Dataset, DatasetDict

from hf_cai.builders.prompts import load_prompts
from hf_cai.dataset_reader import DatasetReadError, read_dataset


def test_local_files_and_saved_folders(tmp_path):
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"prompt": "one"}, {"prompt": "two"}]}))
    assert read_dataset(tmp_path / "wrapped.json")["prompt"] == ["one", "two"]
    (tmp_path / "gaps.csv").write_text("prompt,harmful\nNA,false\nNone,true\n")
    assert read_dataset(tmp_path / "gaps.csv")["prompt"] == ["NA", "None"]  # words, not missing values
    (tmp_path / "plain.json").write_text(json.dumps(["first", "second"]))
    assert [chat[0]["content"] for chat in load_prompts(tmp_path / "plain.json")] == ["first", "second"]
    DatasetDict({"train_prefs": Dataset.from_dict({"x": [1]}), "test": Dataset.from_dict({"x": [2]})}).save_to_disk(
        str(tmp_path / "run" / "dataset"))
    assert read_dataset(tmp_path / "run", split=["train_sft", "train_prefs"])["x"] == [1]
    with pytest.raises(DatasetReadError, match="has no split train; its splits are: train_prefs, test"):
        read_dataset(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_dataset(tmp_path / "missing.parquet")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(DatasetReadError, match=r"broken\.jsonl: cannot be read as json"):
        read_dataset(tmp_path / "broken.jsonl")
