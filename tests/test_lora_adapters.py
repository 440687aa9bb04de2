"""LoRA adapters registered with an inference server at run time (hf_cai.backends.lora_adapters), against
tests/openai_server.py answering vLLM's and SGLang's routes as those engines document them."""

from __future__ import annotations

import pytest
import torch
from openai_server import OpenAIServer

from hf_cai.backends import BackendError, EndpointBackend, TransformersBackend
from hf_cai.backends.lora_adapters import (
    AdapterLoadError,
    adapter_content_name,
    load_lora_adapter,
    unload_lora_adapter,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHATS = [[{"role": "user", "content": f"Say something about {topic}."}] for topic in ("rivers", "bread", "stars")]


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return TransformersBackend(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (not zero) weights, so its replies differ from the base model's."""
    from peft import LoraConfig, get_peft_model

    from hf_cai.modeling import load_causal_lm

    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(str(tiny_model_dir), dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def _replies(backend) -> list[str]:
    return backend.generate(CHATS, max_new_tokens=6, temperature=1.0, seed=5)


@pytest.mark.parametrize(("lora_api", "model"), [("vllm", "{name}"), ("sglang", "tiny:{name}")])
def test_a_registered_adapter_answers_under_its_name_until_unloaded(base, adapter_dir, tiny_model_dir, lora_api, model):
    name = adapter_content_name(adapter_dir, prefix="cai-sft")
    local = TransformersBackend(tiny_model_dir, adapter=str(adapter_dir), dtype=torch.float32)
    with OpenAIServer(base, model_name="tiny", lora_api=lora_api) as server:
        endpoint = EndpointBackend(server.base_url, "tiny")
        served = load_lora_adapter(endpoint, name, adapter_dir)
        assert served.model == model.format(name=name) and set(server.adapters) == {name}
        remote = _replies(EndpointBackend(server.base_url, served.model))
        assert remote == _replies(local) != _replies(endpoint)  # the adapter's replies, not the base model's
        # Registered again (a run resumed after a crash left it loaded): used as it is.
        assert load_lora_adapter(endpoint, name, adapter_dir) == served
        unload_lora_adapter(endpoint, served)
        assert not server.adapters
        with pytest.raises(BackendError, match="HTTP 404.*does not exist"):
            EndpointBackend(server.base_url, served.model, max_retries=0).generate(CHATS[:1], max_new_tokens=2)


def test_the_name_follows_the_adapter_content(adapter_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(adapter_dir, copy)
    assert adapter_content_name(copy) == adapter_content_name(adapter_dir)
    (copy / "adapter_config.json").write_text((copy / "adapter_config.json").read_text().replace('"r": 4', '"r": 5'))
    assert adapter_content_name(copy) != adapter_content_name(adapter_dir)


@pytest.mark.parametrize("lora_api", ["vllm", "sglang"])
def test_a_folder_the_server_cannot_read_is_named_in_the_error(base, adapter_dir, tmp_path, lora_api):
    # The server sees its own filesystem (another machine, a container): the run's path does not exist there.
    with OpenAIServer(base, model_name="tiny", lora_api=lora_api, filesystem_root=str(tmp_path)) as server:
        with pytest.raises(AdapterLoadError) as error:
            load_lora_adapter(EndpointBackend(server.base_url, "tiny"), "cai-sft", adapter_dir)
    message = str(error.value)
    assert str(adapter_dir.resolve()) in message and "must see this same path" in message
    assert "policy_adapter_names" in message and not server.adapters


def test_a_server_without_runtime_lora_loading_says_how_to_enable_it(base, adapter_dir):
    with OpenAIServer(base, model_name="tiny", lora_api=None) as server:
        with pytest.raises(AdapterLoadError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.*policy_adapter_names"):
            load_lora_adapter(EndpointBackend(server.base_url, "tiny"), "cai-sft", adapter_dir)
