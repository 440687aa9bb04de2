"""The Space holds many visitors: concurrent requests share one generation batch with the replies each would get
alone, and bad input (empty, very long, control characters, emoji, a visitor who leaves mid-stream) gets a clear
message or is trimmed without touching anyone else. Served on 127.0.0.1, driven with gradio_client, on the tiny
model + a tiny adapter."""

from __future__ import annotations

import collections
import inspect
import threading

import pytest
from test_space_app import build_tiny_adapter, client, launch, reply

from hf_cai.hub.space_config import SpaceConfig
from hf_cai.spaces.app import EMPTY_PROMPT_NOTICE, TRIMMED_NOTICES, clean_message
from hf_cai.spaces.batching import TRIMMED_MESSAGE, TRIMMED_TURNS

VISITORS = 10
MAX_INPUT_TOKENS = 200
MAX_PROMPT_CHARS = 25_000


@pytest.fixture(scope="module")
def space(tiny_model_dir, tmp_path_factory, exact_float32):
    """The Space, its models and a backend on the same weights for the replies each visitor gets alone.

    A one-second batch window makes "arrived together" certain even on a busy machine; a small input budget lets a
    long prompt be trimmed."""
    from hf_cai.backends import TransformersBackend
    from hf_cai.spaces.models import SideBySideModels

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("batching-adapter"))
    config = SpaceConfig(base_model=str(tiny_model_dir), cai_model=str(adapter), temperature=0.0,
                         max_prompt_chars=MAX_PROMPT_CHARS, max_input_tokens=MAX_INPUT_TOKENS, batch_window_ms=1000)
    models = SideBySideModels.from_config(config)
    demo, url = launch(config, models)
    (batcher,) = models.batchers
    cai = TransformersBackend(batcher.model, batcher.tokenizer, max_input_tokens=MAX_INPUT_TOKENS)
    yield url, batcher, {"base": cai.without_adapter(), "cai": cai}
    demo.close()


def alone(backends, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> tuple[str, str]:
    """Both panels' replies from the generation backend, one conversation per call (a batch of one), as the chat
    shows them: Gradio's Chatbot passes each message through ``inspect.cleandoc`` (tabs become spaces)."""
    chat = [{"role": "user", "content": prompt}]
    return tuple(
        inspect.cleandoc(backends[panel].generate_detailed(
            [chat], max_new_tokens=max_new_tokens, temperature=temperature, seeds=[seed])[0].text).strip()
        for panel in ("base", "cai")
    )


def at_once(calls: list) -> list:
    """Run ``calls`` (functions) in threads released together; their results (or exceptions) in order."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as error:  # returned to the test thread, which asserts on it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_concurrent_visitors_share_one_batch_and_get_the_replies_they_would_get_alone(space):
    url, batcher, backends = space
    # Half the visitors sample (each with its own seed), half decode greedily; reply lengths differ too.
    visits = [(f"Question {i}: how do locks work?", 6 + i % 3 * 2, 0.8 if i % 2 else 0.0, 100 + i)
              for i in range(VISITORS)]
    expected = [alone(backends, *visit) for visit in visits]
    sessions = [client(url) for _ in visits]
    before = collections.Counter(batcher.batch_sizes)

    results = at_once([lambda s=s, v=v: s.predict(*v, api_name="/chat") for s, v in zip(sessions, visits)])

    assert [r for r in results if isinstance(r, Exception)] == []
    got = [(reply(base_history), reply(cai_history)) for base_history, cai_history, _, _ in results]
    assert got == expected
    assert len(set(got)) > 1
    assert batcher.batch_sizes - before == collections.Counter({2 * VISITORS: 1})  # one batch: both panels, all


def test_a_next_turn_reuses_the_keys_and_values_of_the_last_with_unchanged_replies(space):
    url, batcher, backends = space
    turns = [("Tell me about gates.", 10, 0.0, 1), ("Why are they made of iron?", 10, 0.8, 2), ("And wood?", 10, 0.8, 3)]
    expected, histories = [], {"base": [], "cai": []}
    for prompt, max_new_tokens, temperature, seed in turns:  # each turn's whole conversation computed afresh
        for panel, history in histories.items():
            history.append({"role": "user", "content": prompt})
            raw = backends[panel].generate_detailed(
                [history], max_new_tokens=max_new_tokens, temperature=temperature, seeds=[seed])[0].text
            history.append({"role": "assistant", "content": raw})
        expected.append(tuple(inspect.cleandoc(histories[panel][-1]["content"]).strip() for panel in ("base", "cai")))
    session = client(url)
    reused_before = batcher.prefixes.reused_tokens

    got = [session.predict(*turn, api_name="/chat") for turn in turns]

    assert [(reply(base_history), reply(cai_history)) for base_history, cai_history, _, _ in got] == expected
    assert batcher.prefixes.reused_tokens - reused_before >= 2 * 32  # a later turn of both panels reused its past


def test_a_visitor_joins_a_running_batch_without_waiting_for_its_end(space):
    from gradio_client.utils import Status

    url, batcher, backends = space
    long_visit, short_visit = ("Talk about doors.", 300, 0.8, 11), ("And keys?", 8, 0.8, 12)
    expected = [alone(backends, *long_visit), alone(backends, *short_visit)]
    talker, newcomer = client(url), client(url)

    job = talker.submit(*long_visit, api_name="/chat")
    while not any(reply(output[0]) not in ("", "…") for output in job.outputs()):
        threading.Event().wait(0.02)
    short = newcomer.predict(*short_visit, api_name="/chat")
    still_talking = job.status().code != Status.FINISHED
    long = job.result(timeout=300)

    assert still_talking  # the newcomer's reply came while the long one was still being decoded
    assert [(reply(r[0]), reply(r[1])) for r in (long, short)] == expected  # both as they would be alone


def test_replies_decoded_apart_from_the_shared_batches_are_the_same(space):
    from hf_cai.spaces.batching import ReplyRequest, stream_replies
    from hf_cai.spaces.models import BASE_ADAPTER

    _, batcher, backends = space
    visit = ("Tell me about hinges.", 40, 0.8, 5)  # longer than one stretch (join_every)
    expected = alone(backends, *visit)
    chat = [{"role": "user", "content": visit[0]}]
    requests = [ReplyRequest(chat, max_new_tokens=visit[1], temperature=visit[2], seed=visit[3], adapter=adapter)
                for adapter in (BASE_ADAPTER, batcher.model.active_adapter)]
    for _ in stream_replies([(batcher, request) for request in requests], shared=False):
        pass
    assert tuple(inspect.cleandoc(batcher.text(r)).strip() for r in requests) == expected
    assert all(r.finish_reason in ("stop", "length") for r in requests)


def test_reused_keys_and_values_give_the_scores_of_the_whole_prompt(space):
    import torch

    from hf_cai.backends.batching import cache_name, output_cache
    from hf_cai.spaces.prefix_cache import batch_inputs, row_prefix

    _, batcher, _ = space
    model, tokenizer = batcher.model.get_base_model(), batcher.tokenizer
    long, short = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in
                   ("Castles had gates of oak and iron, and walls of stone " * 3, "Bridges cross rivers " * 4))
    with torch.inference_mode():
        kept = output_cache(model(input_ids=torch.tensor([long[:40]]), use_cache=True))
        entry = row_prefix(kept, 0, torch.arange(40), None, long[:40])
        # Row 0 reuses its first 40 tokens; row 1, shorter, reuses nothing: padding before and inside the rows.
        input_ids, attention_mask, cache = batch_inputs(model, [long, short], [(40, entry), (0, None)], tokenizer)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=1,
                                do_sample=False, return_dict_in_generate=True, output_logits=True,
                                pad_token_id=tokenizer.pad_token_id, **{cache_name(): cache})
        for row, ids in enumerate((long, short)):
            whole = model(input_ids=torch.tensor([ids])).logits[0, -1]
            assert torch.allclose(output.logits[0][row], whole, atol=1e-4)


def test_a_visitor_who_leaves_mid_stream_stops_only_their_replies(space):
    from gradio_client.utils import Status

    url, batcher, backends = space
    leaver, stayer = client(url), client(url)
    stayer_visit = ("Tell me about keys.", 12, 0.8, 7)
    expected = alone(backends, *stayer_visit)
    before = collections.Counter(batcher.batch_sizes)
    steps = []
    # The output head runs once per decoding step (PEFT's generate calls the base model, not the PEFT wrapper).
    hook = batcher.model.get_output_embeddings().register_forward_pre_hook(lambda *args: steps.append(1))
    try:
        job = leaver.submit("Talk for a long time about doors.", 1000, 0.0, -1, api_name="/chat")
        staying = stayer.submit(*stayer_visit, api_name="/chat")
        while not any(reply(output[0]) not in ("", "…") for output in job.outputs()):
            assert job.status().code != Status.FINISHED, "the long reply ended before it streamed"
            threading.Event().wait(0.02)
        job.cancel()
        base_history, cai_history, notice, _ = staying.result(timeout=120)
        # A later visitor is answered in the next batch, once the shared one has ended.
        later = client(url).predict("Still there?", 4, 0.0, -1, api_name="/chat")
    finally:
        hook.remove()
    assert notice == ""
    assert (reply(base_history), reply(cai_history)) == expected
    assert set(batcher.batch_sizes - before) == {4, 2}  # the two visitors shared a batch, the later one another
    assert len(steps) < 500  # not the 1000 steps of the leaver's replies: they stopped when the visitor left
    assert reply(later[0]) and reply(later[1])


def test_bad_input_gets_a_clear_message_or_is_trimmed_and_nobody_else_is_affected(space):
    url, batcher, backends = space
    good_visit = ("What is a padlock?", 8, 0.8, 3)
    expected = alone(backends, *good_visit)
    long_prompt = "Please read all of this. " + "word " * 4000  # 20,025 characters, about 4,000 tokens
    assert len(long_prompt) > 20_000
    sessions = [client(url) for _ in range(5)]
    calls = [
        lambda: sessions[0].predict(*good_visit, api_name="/chat"),
        lambda: sessions[1].predict("  \n\t ", 8, 0.0, -1, api_name="/chat"),
        lambda: sessions[2].predict(long_prompt, 8, 0.0, -1, api_name="/chat"),
        lambda: sessions[3].predict("x" * (MAX_PROMPT_CHARS + 1), 8, 0.0, -1, api_name="/chat"),
        lambda: sessions[4].predict("Hi\x00 there\x1b[0m 😀👩‍👩‍👧\r\n¿qué?", 8, 0.0, -1, api_name="/chat"),
    ]
    good, empty, trimmed, refused, controls = at_once(calls)

    assert (reply(good[0]), reply(good[1])) == expected and good[2] == ""
    assert empty[0] == [] and empty[1] == [] and empty[2] == EMPTY_PROMPT_NOTICE
    assert reply(trimmed[0]) and reply(trimmed[1]) and trimmed[2] == TRIMMED_NOTICES[TRIMMED_MESSAGE]
    assert refused[0] == [] and f"limit is {MAX_PROMPT_CHARS}" in refused[2] and refused[3] == "x" * (MAX_PROMPT_CHARS + 1)
    user = controls[0][0]["content"]
    assert (user if isinstance(user, str) else user[0]["text"]) == "Hi there[0m 😀👩‍👩‍👧\n¿qué?"
    assert reply(controls[0]) and reply(controls[1])
    assert controls[2] == "Removed 2 control characters from your message."

    # A conversation that outgrows the input budget loses its earliest turns, and the visitor is told.
    session = client(url)
    session.predict("Tell me about " + "old castles and their gates " * 25, 4, 0.0, -1, api_name="/chat")
    *_, notice, _ = session.predict("And bridges?", 4, 0.0, -1, api_name="/chat")
    assert notice == TRIMMED_NOTICES[TRIMMED_TURNS]


def test_clean_message_removes_control_characters_and_lone_surrogates_only():
    assert clean_message(" a\x00b\x7f\x9b\ud800c\td\r\ne\rf 😀👍🏽 ") == ("abc\td\ne\nf 😀👍🏽", 4)
    assert clean_message("\x00\x01") == ("", 2)
