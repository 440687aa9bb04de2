"""Drop-in: one plain TRL script, run with TRL's trainer/config pair and with hf_cai's, trains and saves the same."""

from __future__ import annotations

import pytest
from scripts import train_pair


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward"])
def test_the_same_script_trains_identically_with_either_pair(stage, tiny_model_dir, tiny_reward_model_dir, tmp_path):
    model = tiny_reward_model_dir if stage == "reward" else tiny_model_dir
    runs = {}
    for pair in ("trl", "cai"):
        output = tmp_path / pair
        runs[pair] = train_pair.main(["--pair", pair, "--stage", stage, "--model", str(model), "--output", str(output)])
        assert (output / "adapter_model.safetensors").is_file() and (output / "adapter_config.json").is_file()
    assert (tmp_path / "cai" / "cai_training.json").is_file()
    assert not (tmp_path / "trl" / "cai_training.json").exists()
    losses = {pair: [entry["loss"] for entry in run["log_history"] if "loss" in entry] for pair, run in runs.items()}
    assert len(losses["trl"]) == 2
    assert losses["cai"] == pytest.approx(losses["trl"], abs=1e-6)
