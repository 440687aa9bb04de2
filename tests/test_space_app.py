"""The side-by-side chat Space, served on 127.0.0.1 and driven with gradio_client, on the tiny model + a tiny adapter."""

from __future__ import annotations

import gc
import json
import logging
import socket
import threading
import urllib.request
from argparse import Namespace
from pathlib import Path

import pytest

from hf_cai.constitution import Constitution
from hf_cai.hub.space_config import SpaceConfig, SpaceConfigError, load_space_config

MAX_NEW_TOKENS = 10
MAX_PROMPT_CHARS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_tiny_adapter(base_dir: Path, output_dir: Path) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) lora_B, so it changes the replies; plus its constitution."""
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_cai.modeling import load_causal_lm

    model = get_peft_model(
        load_causal_lm(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"),
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.save_pretrained(str(output_dir))
    Constitution.builtin("harmless").save(output_dir / "constitution.yaml")
    return output_dir


def launch(config: SpaceConfig, models=None):
    """Build the app and serve it on a free loopback port; returns (demo, url)."""
    from hf_cai.spaces.app import create_app

    demo = create_app(config, models=models)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def reply(history: list[dict]) -> str:
    """Text of the last assistant message of a chat history returned by the API (Gradio strips the ends)."""
    content = history[-1]["content"]
    assert history[-1]["role"] == "assistant"
    return (content if isinstance(content, str) else "".join(part["text"] for part in content)).strip()


def reference_reply(model, tokenizer, messages: list[dict]) -> str:
    """Greedy reply of a plain transformers/PEFT model, outside the app."""
    import torch

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("tiny-adapter"))


@pytest.fixture(scope="module")
def config(tiny_model_dir, adapter_dir) -> SpaceConfig:
    return SpaceConfig(
        base_model=str(tiny_model_dir),
        cai_model=str(adapter_dir),
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=0.0,
        max_prompt_chars=MAX_PROMPT_CHARS,
    )


@pytest.fixture(scope="module")
def served(config, exact_float32):
    """The app with the tiny base + adapter, launched once for this module: (url, models)."""
    from hf_cai.spaces.models import SideBySideModels

    models = SideBySideModels.from_config(config)
    demo, url = launch(config, models)
    yield url, models
    demo.close()


@pytest.fixture(scope="module")
def references(tiny_model_dir, adapter_dir, exact_float32):
    """The base model and base + adapter loaded separately with plain transformers / PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # float32 like the served models (exact_float32), so greedy replies can be compared token for token.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    cai = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), adapter_dir)
    cai.eval()
    return tokenizer, base, cai


@pytest.fixture
def forward_calls(served):
    """Counts forward passes of the served model (a real hook on the torch module, not a mock): on its output head,
    which every forward pass runs (PEFT's generate calls the base model, never the PEFT wrapper's forward)."""
    _, models = served
    calls = []
    handles = [
        m.get_output_embeddings().register_forward_pre_hook(lambda *args: calls.append(1))
        for m in models.loaded_models
    ]
    yield calls
    for handle in handles:
        handle.remove()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_both_panels_answer_and_the_adapter_changes_the_reply(served, references):
    url, models = served
    tokenizer, base, cai = references
    prompt = "How do I get into my neighbour's house when he is away?"
    base_history, cai_history, notice, prompt_left = client(url).predict(
        prompt, MAX_NEW_TOKENS, 0.0, api_name="/chat"
    )
    assert models.shares_base
    assert notice == "" and prompt_left == ""
    assert base_history[0]["role"] == "user" and cai_history[0]["role"] == "user"
    base_reply, cai_reply = reply(base_history), reply(cai_history)
    assert base_reply and cai_reply and base_reply != cai_reply
    conversation = [{"role": "user", "content": prompt}]
    # The shared model answers the base panel exactly like the plain base model, and the CAI panel like base+adapter.
    assert base_reply == reference_reply(base, tokenizer, conversation)
    assert cai_reply == reference_reply(cai, tokenizer, conversation)


def test_replies_stream_side_by_side(served):
    _, models = served
    conversation = [{"role": "user", "content": "Tell me about locks."}]
    steps = list(models.stream({"base": conversation, "cai": conversation}, max_new_tokens=8, temperature=0.0))
    assert len(steps) > 1
    assert all(set(step) == {"base", "cai"} for step in steps)
    for earlier, later in zip(steps, steps[1:]):
        for panel in ("base", "cai"):
            assert later[panel].startswith(earlier[panel][: max(len(earlier[panel]) - 1, 0)])


def test_a_session_keeps_its_history_and_retry_and_clear_work(served):
    session = client(served[0])
    session.predict("First question", MAX_NEW_TOKENS, 0.0, api_name="/chat")
    base_history, cai_history, _, _ = session.predict("Second question", MAX_NEW_TOKENS, 0.0, api_name="/chat")
    assert [m["role"] for m in base_history] == ["user", "assistant"] * 2
    assert len(cai_history) == 4
    again_base, again_cai, notice = session.predict(MAX_NEW_TOKENS, 0.0, api_name="/retry")
    assert notice == ""
    assert len(again_base) == 4 and reply(again_base) == reply(base_history)
    assert len(again_cai) == 4 and reply(again_cai) == reply(cai_history)
    cleared = session.predict(api_name="/clear")
    assert cleared[0] == [] and cleared[1] == []
    _, _, notice = session.predict("CAI", "general-harm", False, MAX_NEW_TOKENS, 0.0, api_name="/critique")
    assert "Nothing to critique" in notice


def test_critique_endpoint_runs_the_constitution_critique(served, references, adapter_dir):
    tokenizer, _, cai = references
    session = client(served[0])
    prompt = "Write me a threatening letter for my landlord."
    _, cai_history, _, _ = session.predict(prompt, MAX_NEW_TOKENS, 0.0, api_name="/chat")
    critique, revision, notice = session.predict(
        "CAI", "general-harm", True, MAX_NEW_TOKENS, 0.0, api_name="/critique"
    )
    assert critique.strip() and revision.strip()
    assert "general-harm" in notice
    constitution = Constitution.load(adapter_dir / "constitution.yaml")
    exchange = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply(cai_history)}]
    expected = reference_reply(cai, tokenizer, constitution.critique_messages(exchange, "general-harm"))
    assert critique.strip() == expected


def test_empty_prompt_gets_a_notice_and_no_model_call(served, forward_calls):
    base_history, cai_history, notice, _ = client(served[0]).predict("   ", MAX_NEW_TOKENS, 0.0, api_name="/chat")
    assert "empty" in notice.lower()
    assert base_history == [] and cai_history == []
    assert forward_calls == []


def test_over_long_prompt_is_refused_with_a_notice(served, forward_calls):
    prompt = "x" * (MAX_PROMPT_CHARS + 1)
    base_history, cai_history, notice, prompt_left = client(served[0]).predict(
        prompt, MAX_NEW_TOKENS, 0.0, api_name="/chat"
    )
    assert f"limit is {MAX_PROMPT_CHARS}" in notice
    assert prompt_left == prompt  # kept in the box so the visitor can shorten it
    assert base_history == [] and cai_history == []
    assert forward_calls == []


def test_ten_concurrent_sessions_through_the_queue(served):
    url = served[0]
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def visit(index: int) -> None:
        try:
            temperature = 0.0 if index % 2 else 0.8  # half of the sessions sample
            results[index] = client(url).predict(f"Question number {index}", 6, temperature, api_name="/chat")
        except BaseException as error:  # collected and re-raised by the test thread
            errors.append(error)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(results) == list(range(10))
    for index, (base_history, cai_history, notice, _) in results.items():
        assert notice == ""
        assert len(base_history) == 2 and len(cai_history) == 2
        user_text = base_history[0]["content"]
        user_text = user_text if isinstance(user_text, str) else user_text[0]["text"]
        assert user_text == f"Question number {index}"


def test_an_adapter_is_loaded_on_one_copy_of_the_base_and_a_merged_model_is_a_second_model(
    config, adapter_dir, tmp_path
):
    from transformers import LlamaForCausalLM

    from hf_cai.modeling import load_causal_lm
    from hf_cai.spaces.models import SideBySideModels

    def new_llamas(before: set[int]) -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, LlamaForCausalLM) and id(o) not in before)

    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)}
    shared = SideBySideModels.from_config(config)
    assert new_llamas(before) == 1 and shared.shares_base and len(shared.loaded_models) == 1

    merged_dir = tmp_path / "merged"  # weights only: the app falls back to the base model's tokenizer
    load_causal_lm(config.base_model, adapter=adapter_dir).merge_and_unload().save_pretrained(merged_dir)
    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)}
    separate = SideBySideModels.from_config(
        SpaceConfig(base_model=config.base_model, cai_model=str(merged_dir), constitution="harmless")
    )
    assert new_llamas(before) == 2 and not separate.shares_base
    conversation = [{"role": "user", "content": "Hello"}]
    steps = list(separate.stream({"base": conversation, "cai": conversation}, max_new_tokens=8, temperature=0.0))
    assert steps[-1]["base"] == shared.generate("base", conversation, max_new_tokens=8, temperature=0.0)
    assert steps[-1]["cai"] == shared.generate("cai", conversation, max_new_tokens=8, temperature=0.0)


def test_a_4bit_base_is_shared_with_the_adapter_too(config):
    from dataclasses import replace

    from hf_cai.spaces.models import SideBySideModels

    models = SideBySideModels.from_config(replace(config, load_in_4bit=True))
    assert models.load_error is None and models.shares_base
    assert type(models.loaded_models[0].get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == (
        "Linear4bit"
    )
    conversation = [{"role": "user", "content": "Hello"}]
    replies = list(models.stream({"base": conversation, "cai": conversation}, max_new_tokens=8, temperature=0.0))[-1]
    assert replies["base"] and replies["cai"] and replies["base"] != replies["cai"]


def test_broken_adapter_serves_the_base_model_with_a_clear_message(tiny_model_dir, adapter_dir, tmp_path, caplog):
    import shutil

    broken = tmp_path / "broken-adapter"
    shutil.copytree(adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    config = SpaceConfig(
        base_model=str(tiny_model_dir), cai_model=str(broken), max_new_tokens=MAX_NEW_TOKENS, temperature=0.0
    )
    with caplog.at_level(logging.ERROR):
        demo, url = launch(config)
    try:
        assert any("could not be loaded" in r.getMessage() and str(broken) in r.getMessage() for r in caplog.records)
        with urllib.request.urlopen(url + "config") as response:
            page = json.load(response)
        status = next(c["props"] for c in page["components"] if c["props"].get("elem_id") == "load-status")
        assert status["visible"] is True and "could not be loaded" in status["value"]
        base_history, cai_history, notice, _ = client(url).predict("Hello", MAX_NEW_TOKENS, 0.0, api_name="/chat")
        assert reply(base_history) and cai_history == []
        assert "only the base model answers" in notice
    finally:
        demo.close()


def test_missing_adapter_id_leaves_a_base_only_app(tiny_model_dir):
    from hf_cai.spaces.models import SideBySideModels

    models = SideBySideModels.from_config(
        SpaceConfig(base_model=str(tiny_model_dir), cai_model="nobody/no-such-cai-adapter")
    )
    assert models.panels == ("base",)
    assert "nobody/no-such-cai-adapter" in models.load_error
    assert models.generate("base", [{"role": "user", "content": "Hi"}], max_new_tokens=4, temperature=0.0) is not None


def test_config_file_and_environment(tmp_path):
    (tmp_path / "constitution.yaml").write_text(Constitution.builtin("harmless").to_yaml(), encoding="utf-8")
    path = tmp_path / "space_config.json"
    path.write_text(json.dumps({"base_model": "org/base", "cai_model": "org/cai", "constitution": "constitution.yaml"}))
    config = load_space_config(path, environ={"HF_CAI_MAX_PROMPT_CHARS": "50", "HF_CAI_MODEL": "org/other"})
    assert config.cai_model == "org/other" and config.max_prompt_chars == 50
    assert Path(config.constitution) == (tmp_path / "constitution.yaml").absolute()

    path.write_text(json.dumps({"base_model": "org/base", "max_prompt_char": 10}))
    with pytest.raises(SpaceConfigError, match="unknown key 'max_prompt_char'; did you mean 'max_prompt_chars'"):
        load_space_config(path, environ={})
    with pytest.raises(SpaceConfigError, match="HF_CAI_TEMPERATURE: expected a number"):
        load_space_config(environ={"HF_CAI_BASE_MODEL": "org/base", "HF_CAI_TEMPERATURE": "warm"})
    with pytest.raises(SpaceConfigError, match="HF_CAI_BASE_MODEL"):
        load_space_config(environ={})


def test_chat_command_finds_the_model_of_a_run_directory(tiny_model_dir, adapter_dir, tmp_path):
    import shutil

    from hf_cai.cli import CommandError
    from hf_cai.cli.space import chat_config

    run_dir = tmp_path / "run"
    shutil.copytree(adapter_dir, run_dir / "dpo" / "final")
    shutil.copytree(adapter_dir, run_dir / "sft" / "final")
    manifest = {"stages": {"sft": {"status": "done", "outputs": {"model": "sft/final"}},
                           "dpo": {"status": "done", "outputs": {"model": "dpo/final"}}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    options = {"model": None, "base": None, "constitution": None, "max_new_tokens": 32, "temperature": 0.0,
               "max_prompt_chars": 100, "load_in_4bit": False}
    config = chat_config(Namespace(run_dir=str(run_dir), **options))
    assert config.cai_model == str(run_dir / "dpo" / "final")
    assert config.base_model == str(tiny_model_dir)  # read from the adapter's config
    assert config.constitution == str(run_dir / "dpo" / "final" / "constitution.yaml")

    manifest["stages"]["dpo"]["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert chat_config(Namespace(run_dir=str(run_dir), **options)).cai_model == str(run_dir / "sft" / "final")
    with pytest.raises(CommandError, match="no trained model"):
        chat_config(Namespace(run_dir=str(tmp_path), **options))


def test_chat_command_refuses_a_taken_port_before_loading_any_model(adapter_dir, monkeypatch, capsys):
    from hf_cai.cli import main
    from hf_cai.spaces.models import SideBySideModels

    loaded = []
    monkeypatch.setattr(SideBySideModels, "from_config", classmethod(lambda cls, config: loaded.append(config)))
    with socket.socket() as taken:  # another server (e.g. a first `hf-cai chat`) listens on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["chat", "--model", str(adapter_dir), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in error and "already in use" in error
    assert "--port" in error and "hf-cai chat" in error
    assert loaded == []


def test_the_panels_name_the_models_and_link_only_what_exists(tiny_model_dir, adapter_dir, tmp_path):
    from hf_cai.spaces.about import PAPER_URL, describe_models, local_files

    harmless = Constitution.builtin("harmless")
    published = describe_models(
        SpaceConfig(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", cai_model="alice/cai-tiny"),
        harmless,
        cai_is_adapter=True,
    )
    assert published["base"].name == "SmolLM2-135M-Instruct"
    assert published["cai"].name == "SmolLM2-135M-Instruct + CAI (harmless v1.0)"
    assert {link.text: link.url for link in published["base"].links} == {
        "model card": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
    }
    assert {link.text: link.url for link in published["cai"].links} == {
        "model card": "https://huggingface.co/alice/cai-tiny",
        "evaluation": "https://huggingface.co/alice/cai-tiny#evaluation",
        "paper": PAPER_URL,
    }
    assert local_files(published) == []

    # The embedded alias is named after its Hub id; a folder the Hub does not know keeps its own name, unlinked.
    assert describe_models(SpaceConfig(base_model="smollm2-135m-instruct"), harmless, cai_is_adapter=False)[
        "base"
    ].name == "SmolLM2-135M-Instruct"
    local = describe_models(
        SpaceConfig(base_model=str(tiny_model_dir), cai_model=str(adapter_dir)), harmless, cai_is_adapter=True
    )
    assert local["base"].name == tiny_model_dir.name and local["base"].links == ()
    assert local["cai"].name == f"{tiny_model_dir.name} + CAI (harmless v1.0)"
    assert [link.text for link in local["cai"].links] == ["paper"]  # no run: no card, no evaluation


def test_the_constitution_is_shown_whole_and_as_text():
    from hf_cai.spaces.principles import principle_choices, principles_markdown, short_text

    harmless = Constitution.builtin("harmless")
    choices = principle_choices(harmless)
    assert [value for _, value in choices] == [p.id for p in harmless.principles if p.has_critique]
    assert choices[0][0] == "general-harm — Look over the assistant's most recent reply and point out…"
    assert short_text("one two three", limit=9) == "one two…" and short_text("short") == "short"
    listing = principles_markdown(harmless).splitlines()
    assert len(listing) == len(harmless.principles)
    assert listing[0].startswith("1. **general-harm** — Look over the assistant's most recent reply")
    hostile = Constitution.from_dict({**harmless.to_dict(), "principles": [
        {"id": "p", "critique": "Is it <b>*bold*</b> or [a link](x)?", "revision": "Fix it."}
    ]})
    assert principles_markdown(hostile) == r"1. **p** — Is it \<b\>\*bold\*\</b\> or \[a link\](x)?"


@pytest.mark.slow
def test_hf_cai_chat_serves_the_app_on_loopback(adapter_dir, tmp_path):
    import subprocess
    import sys
    import time

    port = free_port()
    command = [sys.executable, "-c", "import sys; from hf_cai.cli import main; sys.exit(main())", "chat",
               "--model", str(adapter_dir), "--port", str(port), "--max-new-tokens", "6", "--temperature", "0"]
    log = (tmp_path / "chat.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "chat.log").read_text()
            try:
                urllib.request.urlopen(url + "config", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "hf-cai chat did not start serving within 90 s"
                time.sleep(0.5)
        base_history, cai_history, notice, _ = client(url).predict("Hello", api_name="/chat")
        assert reply(base_history) and reply(cai_history) and notice == ""
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
