"""Generation backends: the embedded transformers backend and the OpenAI-compatible endpoint backend, the latter
against tests/openai_server.py serving the tiny model on 127.0.0.1."""

from __future__ import annotations

import logging
import math
import socket
import time
from email.utils import formatdate

import pytest
import torch
from openai_server import OpenAIServer

from hf_cai.backends import (
    BackendError,
    EndpointBackend,
    Generation,
    GenerationBackend,
    TransformersBackend,
    generate_with_reasons,
)
from hf_cai.backends import endpoint as endpoint_module
from hf_cai.backends.endpoint import MAX_RETRY_AFTER, finish_reason, option_logprob, retry_after_seconds
from hf_cai.modeling import ModelLoadError, compute_dtype, cpu_has_fast_bfloat16

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHATS = [[{"role": "user", "content": "Tell me about " + "rivers and mountains " * k}] for k in range(1, 7)]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    # float32, whatever compute_dtype() picks here: these tests compare batched, padded and cached results with
    # unbatched ones to tolerances that only float32 arithmetic meets (see test_default_dtype_is_compute_dtype).
    return TransformersBackend(tiny_model_dir, batch_size=4, dtype=torch.float32)


@pytest.fixture(scope="module")
def smollm2():
    """The embedded real instruct model, which ends its turns by itself."""
    from hf_cai.gguf import resolve_model

    return TransformersBackend(resolve_model("smollm2-135m-instruct"), batch_size=4)


@pytest.fixture(scope="module")
def server(backend):
    with OpenAIServer(backend, model_name="tiny") as running:
        yield running


def _reference_logprob(backend, conversation, option):
    """log P(option | chat) from one unbatched, unpadded forward pass."""
    tokenizer, model = backend.tokenizer, backend.model
    prompt = tokenizer(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))["input_ids"]
    option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([prompt + option_ids])).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + k, token]) for k, token in enumerate(option_ids))


def test_backends_implement_the_protocol(backend, server):
    assert isinstance(backend, GenerationBackend)
    assert isinstance(EndpointBackend(server.base_url, "tiny"), GenerationBackend)


def test_sampling_is_per_row_and_independent_of_batching(backend):
    replies = backend.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=7)
    assert replies == backend.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=7)
    # A row's reply depends on the seed and its position only, not on the rows batched with it.
    assert backend.generate(CHATS[:1], max_new_tokens=12, temperature=1.0, seed=7) == replies[:1]
    one_at_a_time = TransformersBackend(backend.model, backend.tokenizer, batch_size=1)
    assert one_at_a_time.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=7) == replies
    assert backend.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=8) != replies
    assert len(set(replies)) > 1


def test_greedy_matches_unbatched_generation(backend):
    greedy = backend.generate(CHATS, max_new_tokens=10, temperature=0.0)
    # A nucleus this small keeps only the most likely token: sampling then is greedy decoding.
    assert backend.generate(CHATS, max_new_tokens=10, temperature=1.0, top_p=1e-6, seed=4) == greedy
    tokenizer = backend.tokenizer
    for chat, reply in zip(CHATS, greedy):
        ids = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), return_tensors="pt")
        with torch.no_grad():
            out = backend.model.generate(**ids, max_new_tokens=10, do_sample=False)
        assert reply == tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_default_dtype_is_compute_dtype(tiny_model_dir, backend):
    default = TransformersBackend(tiny_model_dir, batch_size=4)
    assert default.model.dtype == compute_dtype()
    if not torch.cuda.is_available():
        assert compute_dtype() == (torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32)
    # bfloat16 weights and activations move the scores by a small fraction of a percent of the float32 ones.
    options = ["(A)", "(B)", "a longer option"]
    scores = [value for row in default.option_logprobs(CHATS, options) for value in row]
    reference = [value for row in backend.option_logprobs(CHATS, options) for value in row]
    assert scores == pytest.approx(reference, rel=2e-3)
    assert len(default.generate(CHATS, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=1)) == len(CHATS)


def test_a_model_in_training_stays_in_training(backend):
    backend.model.train()
    try:
        backend.generate(CHATS[:2], max_new_tokens=4, temperature=0.0)
        backend.option_logprobs(CHATS[:2], ["(A)", "(B)"])
        assert backend.model.training
    finally:
        backend.model.eval()


def test_stop_strings_cut_the_reply(backend):
    full = backend.generate(CHATS[:2], max_new_tokens=16, temperature=1.0, seed=3)
    marker = full[0][3:5]
    stopped = backend.generate(CHATS[:2], max_new_tokens=16, temperature=1.0, seed=3, stop=[marker])
    assert stopped[0] == full[0][: full[0].index(marker)]
    for complete, cut in zip(full, stopped):
        assert marker not in cut and complete.startswith(cut)


def test_replies_say_why_they_ended(backend, smollm2):
    # Four tokens are too few for the tiny model to end its turn: every reply is cut short.
    cut_short = backend.generate_detailed(CHATS, max_new_tokens=4, temperature=1.0, seed=5)
    assert {g.finish_reason for g in cut_short} == {"length"}
    assert [g.text for g in cut_short] == backend.generate(CHATS, max_new_tokens=4, temperature=1.0, seed=5)

    full = backend.generate_detailed(CHATS[:2], max_new_tokens=16, temperature=1.0, seed=3)
    marker = full[0].text[3:5]
    stopped = backend.generate_detailed(CHATS[:2], max_new_tokens=16, temperature=1.0, seed=3, stop=[marker])
    assert stopped[0] == Generation(full[0].text[: full[0].text.index(marker)], "stop_string")
    for complete, cut in zip(full, stopped):
        assert cut.finish_reason == ("stop_string" if marker in complete.text else complete.finish_reason)

    chats = [
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        [{"role": "user", "content": "Write a long story about a dragon."}],
    ]
    finished, truncated = smollm2.generate_detailed(chats, max_new_tokens=24, temperature=0.0)
    assert finished.finish_reason == "stop" and "Paris" in finished.text and "<|im_end|>" not in finished.text
    assert truncated.finish_reason == "length"


def test_backends_with_generate_alone_still_serve_callers(backend):
    class TextOnly:
        """A backend written before finish reasons: ``generate`` and ``option_logprobs`` only."""

        def generate(self, conversations, **kwargs):
            return backend.generate(conversations, **kwargs)

        def option_logprobs(self, prompts, options):
            return backend.option_logprobs(prompts, options)

    arguments = {"max_new_tokens": 4, "temperature": 1.0, "seed": 9}
    assert generate_with_reasons(TextOnly(), CHATS[:2], **arguments) == [
        Generation(text, None) for text in backend.generate(CHATS[:2], **arguments)
    ]
    assert generate_with_reasons(backend, CHATS[:2], **arguments) == backend.generate_detailed(CHATS[:2], **arguments)


def test_option_logprobs_match_an_unbatched_forward_pass(backend):
    options = ["(A)", "(B)", "a longer option"]
    scores = backend.option_logprobs(CHATS, options)
    for chat, row in zip(CHATS, scores):
        for option, score in zip(options, row):
            assert score == pytest.approx(_reference_logprob(backend, chat, option), abs=1e-3)
    single_batch = TransformersBackend(backend.model, backend.tokenizer, batch_size=16)
    for row, expected in zip(single_batch.option_logprobs(CHATS, options), scores):
        assert row == pytest.approx(expected, abs=1e-4)


def test_shared_prefix_is_computed_once_with_unchanged_results(backend):
    from hf_cai.constitution import Constitution

    constitution = Constitution.builtin("harmless")
    chats = [
        constitution.critique_messages(
            [*chat, {"role": "assistant", "content": f"reply {index}"}], constitution.principles[index]
        )
        for index, chat in enumerate(CHATS[:4])
    ]
    ids = backend.encode(chats)
    # The system prompt and few-shot demonstrations are one long shared prefix, cached once per batch.
    assert backend._prepare_batch(ids).cached_length > 1000
    one_at_a_time = TransformersBackend(backend.model, backend.tokenizer, batch_size=1)
    for temperature in (0.0, 1.0):
        batched = backend.generate(chats, max_new_tokens=8, temperature=temperature, seed=2)
        assert batched == one_at_a_time.generate(chats, max_new_tokens=8, temperature=temperature, seed=2)
    scores = backend.option_logprobs(chats[:2], ["(A)", "(B)"])
    for chat, row in zip(chats, scores):
        assert row == pytest.approx([_reference_logprob(backend, chat, option) for option in ("(A)", "(B)")], abs=1e-3)


def test_long_conversations_keep_their_end_with_a_warning(backend, caplog):
    limited = TransformersBackend(backend.model, backend.tokenizer, max_input_tokens=60)
    chat = [
        {"role": "system", "content": "SYSTEM RULES"},
        {"role": "user", "content": "first question " * 40},
        {"role": "assistant", "content": "first answer " * 40},
        {"role": "user", "content": "the final question"},
    ]
    with caplog.at_level(logging.WARNING):
        [ids] = limited.encode([chat])
        replies = limited.generate([chat, CHATS[0]], max_new_tokens=4, temperature=0.0)
    assert "longer than 60 tokens" in caplog.text
    assert len(ids) <= 60
    text = backend.tokenizer.decode(ids)
    assert "SYSTEM RULES" in text and "the final question" in text and "first answer" not in text
    assert len(replies) == 2
    # A single message longer than the limit is cut from the start, never an error.
    [ids] = limited.encode([[{"role": "user", "content": "word " * 500}]])
    assert len(ids) == 60


def test_tokenizer_without_chat_template_is_a_clear_error(backend):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backend.tokenizer.name_or_path)
    tokenizer.chat_template = None
    with pytest.raises(ModelLoadError, match="no chat template.*chat_template ="):
        TransformersBackend(backend.model, tokenizer)


def test_adapter_and_4bit_models_generate(tiny_model_dir, tmp_path, backend):
    from peft import LoraConfig, get_peft_model

    from hf_cai.modeling import load_causal_lm

    adapted = get_peft_model(
        load_causal_lm(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapted.save_pretrained(tmp_path / "adapter")
    from_folder = TransformersBackend(tmp_path / "adapter", dtype=torch.float32)
    assert from_folder.identity["peft"] is True
    on_base = TransformersBackend(tiny_model_dir, adapter=tmp_path / "adapter", dtype=torch.float32)
    greedy = from_folder.generate(CHATS[:2], max_new_tokens=8, temperature=0.0)
    assert greedy == on_base.generate(CHATS[:2], max_new_tokens=8, temperature=0.0)
    assert greedy != backend.generate(CHATS[:2], max_new_tokens=8, temperature=0.0)

    # The base view shares the adapter backend's weights and answers exactly as the plain base model does.
    base_view = on_base.without_adapter()
    assert base_view.model is on_base.model
    assert base_view.generate(CHATS[:2], max_new_tokens=8, temperature=0.0) == backend.generate(
        CHATS[:2], max_new_tokens=8, temperature=0.0
    )
    viewed = base_view.option_logprobs(CHATS[:2], ["(A)", "(B)"])
    plain = backend.option_logprobs(CHATS[:2], ["(A)", "(B)"])
    assert [row for rows in viewed for row in rows] == pytest.approx([row for rows in plain for row in rows], abs=1e-5)
    assert on_base.generate(CHATS[:2], max_new_tokens=8, temperature=0.0) == greedy  # adapter back on afterwards
    with pytest.raises(ValueError, match="needs a backend whose model carries a PEFT adapter"):
        backend.without_adapter()

    quantized = TransformersBackend(tiny_model_dir, load_in_4bit=True)
    assert quantized.identity["load_in_4bit"] is True
    # NF4 weights computed in the default dtype: bfloat16 on a CPU with fast bfloat16, as on a recent GPU.
    assert quantized.model.config.quantization_config.bnb_4bit_compute_dtype == compute_dtype()
    assert any("4bit" in type(module).__name__ for module in quantized.model.modules())
    replies = quantized.generate(CHATS[:3], max_new_tokens=6, temperature=1.0, seed=1)
    assert len(replies) == 3 and all(isinstance(reply, str) for reply in replies)
    assert len(quantized.option_logprobs(CHATS[:2], ["(A)", "(B)"])) == 2


def test_endpoint_generation_matches_the_local_backend(backend, server):
    endpoint = EndpointBackend(server.base_url, "tiny", max_concurrency=8)
    assert endpoint.list_models() == ["tiny"]
    before = len(server.batch_sizes)
    remote = endpoint.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=11)
    # Concurrent requests reach the server together and are generated as a batch.
    assert max(server.batch_sizes[before:]) > 1
    assert remote == backend.generate(CHATS, max_new_tokens=12, temperature=1.0, seed=11)
    stopped = endpoint.generate(CHATS[:1], max_new_tokens=12, temperature=1.0, seed=11, stop=[remote[0][2:4]])
    assert stopped[0] == remote[0][: remote[0].index(remote[0][2:4])]


def test_endpoint_replies_say_why_they_ended(backend, server, smollm2):
    endpoint = EndpointBackend(server.base_url, "tiny", max_concurrency=8)
    arguments = {"max_new_tokens": 12, "temperature": 1.0, "seed": 11}
    local = backend.generate_detailed(CHATS, **arguments)
    assert endpoint.generate_detailed(CHATS, **arguments) == local
    assert {g.finish_reason for g in local} == {"length"}
    marker = local[0].text[2:4]
    stopped = endpoint.generate_detailed(CHATS[:1], **arguments, stop=[marker])
    assert stopped == [Generation(local[0].text[: local[0].text.index(marker)], "stop_string")]

    with OpenAIServer(smollm2, model_name="smollm2") as real:
        chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        [finished] = EndpointBackend(real.base_url, "smollm2").generate_detailed([chat], max_new_tokens=24, temperature=0)
    assert finished == smollm2.generate_detailed([chat], max_new_tokens=24, temperature=0)[0]
    assert finished.finish_reason == "stop"


def test_finish_reasons_of_each_server_kind():
    # OpenAI itself says "stop" for the end of the turn and for a stop string alike.
    assert finish_reason({"finish_reason": "stop"}) == "stop"
    assert finish_reason({"finish_reason": "length"}) == "length"
    # vLLM names the stop string, or the stop token id, in stop_reason; SGLang in matched_stop.
    assert finish_reason({"finish_reason": "stop", "stop_reason": "\n\nUser:"}) == "stop_string"
    assert finish_reason({"finish_reason": "stop", "stop_reason": None}) == "stop"
    assert finish_reason({"finish_reason": "stop", "stop_reason": 128009}) == "stop"
    assert finish_reason({"finish_reason": "stop", "matched_stop": "###"}) == "stop_string"
    # TGI's Messages API.
    assert finish_reason({"finish_reason": "eos_token"}) == "stop"
    assert finish_reason({"finish_reason": "stop_sequence"}) == "stop_string"
    # Anything else is passed through; nothing reported is unknown.
    assert finish_reason({"finish_reason": "content_filter"}) == "content_filter"
    assert finish_reason({}) is None


def test_endpoint_option_scores_follow_top_logprobs(backend, server):
    endpoint = EndpointBackend(server.base_url, "tiny", top_logprobs=20)
    tokenizer = backend.tokenizer
    chat = CHATS[2]
    prompt = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))["input_ids"]
    with torch.no_grad():
        first = torch.log_softmax(backend.model(torch.tensor([prompt])).logits[0, -1].float(), dim=-1)
    # Two options that are single tokens among the top alternatives, and one that spells two greedy tokens.
    candidates = [tokenizer.decode([int(i)]) for i in torch.topk(first, 20).indices]
    singles = [
        text for text in candidates if text.strip() == text and len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1
    ][:2]
    greedy_two = backend.generate([chat], max_new_tokens=2, temperature=0.0)[0]
    options = [*singles, greedy_two]
    remote = endpoint.option_logprobs([chat], options)[0]
    local = backend.option_logprobs([chat], options)[0]
    assert len(singles) == 2
    assert remote == pytest.approx(local, abs=1e-3)


def test_option_logprob_walks_the_reported_tokens():
    steps = [
        [(" (", -0.1), (" (", -0.1), ("A", -3.0)],
        [("A", -0.5), ("B", -1.0), ("C", -4.0)],
        [(")", -0.01), (").", -5.0)],
    ]
    # Every reported token that begins with what is left of the option counts (")" and ")." both start "(A)").
    assert option_logprob(steps, "(A)") == pytest.approx(-0.1 - 0.5 + math.log(math.exp(-0.01) + math.exp(-5.0)))
    # Diverges from the greedy answer at the second position: scored with the alternative there.
    assert option_logprob(steps, "(B)") == pytest.approx(-0.1 - 1.0)
    # Not among the reported alternatives: bounded by the least likely one reported.
    assert option_logprob(steps, "(Z)") == pytest.approx(-0.1 - 4.0)
    assert option_logprob([[("\n", -0.2)], [("(A)", -0.3), ("(B)", -2.0)]], "(B)") == pytest.approx(-0.2 - 2.0)
    assert math.isfinite(option_logprob(steps, "unrelated"))


def test_endpoint_retries_server_errors_then_succeeds(backend):
    with OpenAIServer(backend, fail_first=2) as flaky:
        endpoint = EndpointBackend(flaky.base_url, "tiny", max_concurrency=1, max_retries=3, backoff=0.01)
        assert len(endpoint.generate(CHATS[:2], max_new_tokens=4, seed=0)) == 2
        assert flaky.request_count == 4


def test_endpoint_errors_name_the_url_and_status_but_not_the_key(backend):
    secret = "hf_not_a_real_token_123"
    with OpenAIServer(backend, fail_always=True, fail_status=503) as broken:
        endpoint = EndpointBackend(broken.base_url, "tiny", api_key=secret, max_retries=2, backoff=0.01)
        with pytest.raises(BackendError) as failure:
            endpoint.generate(CHATS[:1], max_new_tokens=4)
        assert broken.request_count == 3
    message = str(failure.value)
    assert f"{broken.base_url}/chat/completions" in message and "HTTP 503" in message and "3 attempts" in message
    assert secret not in message


@pytest.mark.parametrize(("status", "key"), [(401, "sk-wrong-key-4f9c2e1b7a"), (429, "sk-wrong-key-4f9c2e1b7a"),
                                             (401, "k3y")])
def test_a_server_that_repeats_the_key_does_not_put_it_in_errors_or_logs(backend, caplog, status, key):
    # Any string may be a key: it is hidden because it is the key, not because of its shape (even a key too short to
    # register as a secret of the process). A 401 fails at once; a 429 is retried, with a debug line for each failed
    # attempt.
    with OpenAIServer(backend, api_key="sk-the-right-key-0000", key_refused_status=status) as guarded:
        endpoint = EndpointBackend(guarded.base_url, "tiny", api_key=key, max_retries=1, backoff=0.01)
        with caplog.at_level(logging.DEBUG, logger="hf_cai.backends"), pytest.raises(BackendError) as refused:
            endpoint.generate(CHATS[:1], max_new_tokens=4)
        assert guarded.request_count == (1 if status == 401 else 2)
    message = str(refused.value)
    assert f"HTTP {status}" in message and "Incorrect API key provided: ***" in message
    assert key not in message and key not in caplog.text
    if status == 429:
        assert "Incorrect API key provided: ***" in caplog.text


@pytest.mark.parametrize(("status", "as_date"), [(429, False), (503, True)])
def test_endpoint_waits_as_long_as_retry_after_asks(backend, status, as_date):
    # The backoff alone would retry after 0.01 s. The server asks for 1 s, or for the HTTP date 2 s ahead (its
    # second rounded down: more than 1 s after the request either way).
    asked = 2 if as_date else 1
    with OpenAIServer(
        backend, fail_first=1, fail_status=status, retry_after=asked, retry_after_as_date=as_date
    ) as limited:
        endpoint = EndpointBackend(limited.base_url, "tiny", max_retries=1, backoff=0.01)
        assert len(endpoint.generate(CHATS[:1], max_new_tokens=4, seed=0)) == 1
    first, second = limited.request_times
    assert second - first >= 1.0


def test_a_retry_after_past_the_cap_waits_the_cap_and_the_error_says_what_was_asked(backend, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(endpoint_module.time, "sleep", waits.append)  # an hour-long wait cannot run in a test
    with OpenAIServer(backend, fail_always=True, fail_status=429, retry_after=3600) as limited:
        endpoint = EndpointBackend(limited.base_url, "tiny", max_retries=2, backoff=0.01)
        with pytest.raises(BackendError, match=r"3 attempts; last error: HTTP 429; Retry-After: 3600 s"):
            endpoint.generate(CHATS[:1], max_new_tokens=4)
    assert waits == [MAX_RETRY_AFTER, MAX_RETRY_AFTER]


def test_retry_after_values_in_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(" 1.5 ") == 1.5
    assert 8 < retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date already past: no wait
    assert retry_after_seconds("-5") == 0.0
    for unreadable in (None, "", "soon", "nan"):
        assert retry_after_seconds(unreadable) is None


@pytest.mark.parametrize(
    ("bad_reply", "expected"),
    [("malformed_json", r"malformed JSON .*chatcmpl-broken"), ("no_choices", r"empty 'choices' list.*chatcmpl-empty")],
)
def test_endpoint_broken_replies_are_clear_errors(backend, bad_reply, expected):
    with OpenAIServer(backend, bad_reply=bad_reply) as broken:
        endpoint = EndpointBackend(broken.base_url, "tiny", max_retries=0)
        url = f"{broken.base_url}/chat/completions"
        with pytest.raises(BackendError, match=rf"{url}.*{expected}"):
            endpoint.generate(CHATS[:1], max_new_tokens=4)
        with pytest.raises(BackendError, match=rf"{url}.*{expected}"):
            endpoint.option_logprobs(CHATS[:1], ["(A)", "(B)"])


def test_endpoint_client_errors_are_not_retried(server):
    endpoint = EndpointBackend(server.base_url, "no-such-model", max_retries=3, backoff=0.01)
    before = server.request_count
    with pytest.raises(BackendError, match="HTTP 404.*does not exist"):
        endpoint.generate(CHATS[:1], max_new_tokens=4)
    assert server.request_count == before + 1


def test_endpoint_down_or_too_slow_is_a_backend_error(backend):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = EndpointBackend(f"http://127.0.0.1:{port}", "tiny", max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions.*2 attempts.*Connect"):
        down.option_logprobs(CHATS[:1], ["(A)", "(B)"])
    with OpenAIServer(backend, response_delay=0.5) as slow:
        impatient = EndpointBackend(slow.base_url, "tiny", timeout=0.1, max_retries=1, backoff=0.01)
        with pytest.raises(BackendError, match="Timeout"):
            impatient.generate(CHATS[:1], max_new_tokens=4)


def test_the_dtype_variable_overrides_the_choice_and_names_bad_values(monkeypatch):
    from hf_cai.modeling import ModelLoadError, compute_dtype

    monkeypatch.setenv("HF_CAI_DTYPE", "float32")
    assert compute_dtype() == torch.float32
    monkeypatch.setenv("HF_CAI_DTYPE", "fp32")
    with pytest.raises(ModelLoadError, match="HF_CAI_DTYPE='fp32' is not a dtype; use one of: float32, bfloat16"):
        compute_dtype()
