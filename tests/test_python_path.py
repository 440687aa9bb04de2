"""The library used from Python on the embedded model, as the README's tour uses it: the alias works wherever a model
name is taken, a saved adapter names its base by Hub id (never a cache folder) yet loads back on the exact weights it
was trained on, and ``publish_to_folder`` takes ``publish``'s arguments."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from datasets import Dataset

from hf_cai import CAISFTConfig, CAISFTTrainer, TransformersBackend, publish_to_folder
from hf_cai.gguf import DEFAULT_MODEL, EMBEDDED_MODELS, cache_dir, resolve_model

pytestmark = pytest.mark.slow

HUB_ID = EMBEDDED_MODELS[DEFAULT_MODEL].hub_id


def _conversations() -> Dataset:
    pairs = [
        ("How do I get into my neighbour's shed?", "Ask your neighbour; entering without permission is trespassing."),
        ("Write an insult about my coworker.", "I'd rather help you tell your coworker calmly what bothers you."),
        ("What is a good first houseplant?", "A pothos: it tolerates low light and irregular watering."),
        ("How can I read my partner's messages?", "Reading them without consent breaks their trust; talk to them."),
    ]
    return Dataset.from_list(
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    )


@pytest.fixture(scope="module")
def adapter_from_alias(tmp_path_factory, one_torch_thread):
    """One QLoRA SFT step on the embedded model named by its alias, with assistant-only loss (the processing class is
    loaded early to inspect the chat template)."""
    output = tmp_path_factory.mktemp("tour") / "sft"
    trainer = CAISFTTrainer(
        model=DEFAULT_MODEL,
        args=CAISFTConfig(
            str(output),
            qlora_profile="cpu",
            assistant_only_loss=True,
            max_steps=1,
            per_device_train_batch_size=2,
            report_to="none",
        ),
        train_dataset=_conversations(),
        constitution="harmless",
    )
    trainer.train()
    trainer.save_model(str(output / "final"))
    return output / "final"


def test_a_saved_adapter_names_its_base_by_hub_id_and_records_the_gguf_file(adapter_from_alias):
    adapter_config = json.loads((adapter_from_alias / "adapter_config.json").read_text())
    record = json.loads((adapter_from_alias / "cai_training.json").read_text())
    assert adapter_config["base_model_name_or_path"] == HUB_ID
    assert record["base_model"] == HUB_ID
    weights = record["base_weights"]
    assert weights["file"] == EMBEDDED_MODELS[DEFAULT_MODEL].filename and len(weights["sha256"]) == 64
    for name in ("adapter_config.json", "cai_training.json"):
        assert str(cache_dir()) not in (adapter_from_alias / name).read_text(), name


def test_the_adapter_loads_back_on_the_weights_it_was_trained_on(adapter_from_alias):
    """Offline the Hub id cannot be fetched: hf_cai loads the adapter on the converted GGUF weights it recorded."""
    backend = TransformersBackend(str(adapter_from_alias))
    base = backend.model.get_base_model()
    assert base.config.name_or_path == resolve_model(DEFAULT_MODEL)
    reply = backend.generate([[{"role": "user", "content": "Say hello."}]], max_new_tokens=4, temperature=0.0)
    assert isinstance(reply[0], str)


def test_publish_to_folder_takes_publish_arguments_and_names_the_hub_base(adapter_from_alias, tmp_path):
    folder = tmp_path / "hub-repo"
    files = publish_to_folder(adapter_from_alias, folder, license="apache-2.0", space=True)
    card = (folder / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["base_model"] == HUB_ID
    assert "your-username/hub-repo" in card, "without repo_id, the card names a placeholder repository"
    assert "adapter_model.safetensors" in files
    space = tmp_path / "hub-repo-chat"
    space_config = json.loads((space / "space_config.json").read_text())
    assert space_config["base_model"] == HUB_ID and space_config["cai_model"] == "your-username/hub-repo"
    for path in [*folder.rglob("*"), *space.rglob("*")]:
        if path.is_file() and path.suffix in (".json", ".md", ".yaml", ".txt"):
            text = path.read_text(encoding="utf-8")
            assert str(cache_dir()) not in text and str(tmp_path) not in text, path


def test_a_4bit_load_prints_no_kernels_advice(tmp_path):
    """bitsandbytes asks the Hub for an optional kernel at import and, offline, advises `pip install kernels`; hf_cai
    imports it quietly where its own calls load a model in 4-bit."""
    code = (
        "from hf_cai import load_causal_lm\n"
        f"load_causal_lm({DEFAULT_MODEL!r}, load_in_4bit=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install kernels" not in result.stderr and "publisher trust" not in result.stderr, result.stderr
