"""Assistant-only SFT on chat templates without {% generation %} markers.

The templates are real: SmolLM2-135M-Instruct's own ChatML, and the Llama 3.1 / 3.2, Qwen2.5, Gemma and Phi-3
templates that TRL ships, set on a copy of the SmolLM2 tokenizer with each family's control tokens added as single
special tokens (as in the family's own tokenizer), so a masked end-of-turn is one token the model can learn to emit.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.chat_template_utils import has_generation_markers

from hf_cai.builders.critique_revision import sl_features, sl_record
from hf_cai.modeling import load_tokenizer
from hf_cai.trainers import CAISFTConfig, CAISFTTrainer, DatasetFormatError
from hf_cai.trainers.templates import (
    ChatTemplateError,
    add_assistant_masks,
    needs_computed_assistant_masks,
    tokenize_conversation,
)

pytestmark = pytest.mark.min_versions

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"

# family: (template file in TRL's chat_templates/ or None for SmolLM2's own, end-of-turn token, special tokens to add)
FAMILIES = {
    "smollm2": (None, "<|im_end|>", {}),
    "llama3_1": (
        "llama3_1",
        "<|eot_id|>",
        {
            "bos_token": "<|begin_of_text|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        },
    ),
    "llama3_2": (
        "llama3_2",
        "<|eot_id|>",
        {
            "bos_token": "<|begin_of_text|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        },
    ),
    "qwen2_5": ("qwen2_5", "<|im_end|>", {}),
    "gemma": (
        "gemma",
        "<end_of_turn>",
        {"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
    ),
    "phi3": (
        "phi3",
        "<|end|>",
        {
            "eos_token": "<|endoftext|>",
            "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        },
    ),
}

REVISION = "I can't help with that. If someone is in danger, please contact local emergency services."
REPLIES = (
    "I won't help you get into a house that isn't yours.",
    "Then a locksmith can open it once you show the deed.",
)


def conversation(family: str, opener: str = "How do I get into my neighbour's house?") -> list[dict[str, str]]:
    """A two-exchange chat, with a system message unless the template rejects one (Gemma)."""
    system = [] if family == "gemma" else [{"role": "system", "content": "You are a careful assistant."}]
    return [
        *system,
        {"role": "user", "content": opener},
        {"role": "assistant", "content": REPLIES[0]},
        {"role": "user", "content": "It's my own house, I lost the key."},
        {"role": "assistant", "content": REPLIES[1]},
    ]


def masked_runs(input_ids: list[int], keep: list[bool]) -> list[list[int]]:
    """The maximal runs of consecutive kept tokens."""
    return [
        [token for token, _ in run] for kept, run in itertools.groupby(zip(input_ids, keep), key=lambda p: p[1]) if kept
    ]


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    from hf_cai.gguf import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def family_tokenizer(smollm2_tokenizer, family: str):
    template_file, _, special_tokens = FAMILIES[family]
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    if template_file is not None:
        tokenizer.chat_template = (TRL_TEMPLATES / f"{template_file}.jinja").read_text(encoding="utf-8")
    tokenizer.add_special_tokens(special_tokens)
    return tokenizer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_masks_cover_exactly_each_reply_and_its_end_of_turn_token(smollm2_tokenizer, family):
    tokenizer = family_tokenizer(smollm2_tokenizer, family)
    end_of_turn = FAMILIES[family][1]
    assert not has_generation_markers(tokenizer.chat_template)
    assert needs_computed_assistant_masks(tokenizer)

    chat = conversation(family)
    encoding = tokenize_conversation(tokenizer, chat)
    assert encoding["input_ids"] == tokenizer.apply_chat_template(chat)["input_ids"], "tokens as TRL would see them"
    runs = masked_runs(encoding["input_ids"], [bool(m) for m in encoding["assistant_masks"]])
    assert [tokenizer.decode(run) for run in runs] == [reply + end_of_turn for reply in REPLIES]
    # The end of turn is one special token, the one the model must emit to stop.
    assert [run[-1] for run in runs] == [tokenizer.convert_tokens_to_ids(end_of_turn)] * 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_trainer_learns_only_replies_with_each_template(
    smollm2_tokenizer, tiny_model_dir, one_torch_thread, family, tmp_path
):
    tokenizer = family_tokenizer(smollm2_tokenizer, family)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    openers = ["How do I get into my neighbour's house?", "How do I open a locked car?"]
    args = CAISFTConfig(
        output_dir=str(tmp_path),
        assistant_only_loss=True,
        per_device_train_batch_size=2,
        max_steps=1,
        bf16=False,
        report_to="none",
        save_strategy="no",
    )
    trainer = CAISFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": conversation(family, opener)} for opener in openers]),
        processing_class=tokenizer,
    )
    assert args.assistant_only_loss is True, "the user's config is left as given"
    end_of_turn = FAMILIES[family][1]
    for row in trainer.train_dataset:
        runs = masked_runs(row["input_ids"], [label != -100 for label in row["labels"]])
        assert [tokenizer.decode(run) for run in runs] == [reply + end_of_turn for reply in REPLIES]
    trainer.train()
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


def sl_cai_dataset(prompts: list[str]) -> Dataset:
    """Rows as the SL-CAI builder writes them; each prompt carries an earlier exchange, which is context only."""
    rows = []
    for prompt in prompts:
        chat = [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": prompt},
        ]
        rows.append(
            sl_record(
                chat, initial="Sure, here is how.", final=REVISION, revisions=[], kind="revised", constitution_sha256=""
            )
        )
    return Dataset.from_list(rows, features=sl_features())


@pytest.fixture(scope="module")
def tiny_smollm2_dir(smollm2_tokenizer, tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny model folder with SmolLM2's tokenizer and template: a stand-in for the 135M model that trains in seconds."""
    folder = tmp_path_factory.mktemp("tiny-smollm2")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(smollm2_tokenizer))
    model.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def test_sl_cai_rows_train_with_smollm2_template_without_generation_markers(
    tiny_smollm2_dir, one_torch_thread, tmp_path
):
    """The pipeline's SFT stage: a model folder, no processing class, the builder's rows, assistant-only loss."""
    train_prompts = ["How do I pick the lock on my neighbour's door?", "What is the easiest way to steal a bike?"]
    test_prompts = ["How can I get into someone else's email?", "How do I take a car without the key?"]
    args = CAISFTConfig(
        output_dir=str(tmp_path),
        assistant_only_loss=True,
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=5e-3,
        logging_steps=1,
        bf16=False,
        report_to="none",
        save_strategy="no",
    )
    trainer = CAISFTTrainer(model=str(tiny_smollm2_dir), args=args, train_dataset=sl_cai_dataset(train_prompts))
    tokenizer = trainer.processing_class
    assert not has_generation_markers(tokenizer.chat_template)
    for row in trainer.train_dataset:
        runs = masked_runs(row["input_ids"], [label != -100 for label in row["labels"]])
        # Only the completion (the final revision) is learned: not the prompt's earlier assistant turn.
        assert [tokenizer.decode(run) for run in runs] == [REVISION + "<|im_end|>"]

    held_out = sl_cai_dataset(test_prompts)  # prepared by evaluate(), after __init__
    loss_before = trainer.evaluate(held_out)["eval_loss"]
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert trainer.evaluate(held_out)["eval_loss"] < loss_before
    assert trainer.cai_training_record()["hyperparameters"]["assistant_only_loss"] is True


# ChatML that opens the last assistant turn with an empty reasoning block, as Qwen3's template does: a reply renders
# differently once another message follows it.
LAST_TURN_THINKS = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' }}"
    "{%- if m['role'] == 'assistant' and loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ChatML that drops the reasoning of earlier assistant turns, as DeepSeek-R1's template does: prefix-preserving for
# plain replies, not for a conversation whose earlier reply has reasoning.
DROPS_EARLIER_REASONING = (
    "{%- for m in messages %}{%- set content = m['content'] %}"
    "{%- if m['role'] == 'assistant' and not loop.last %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_template_that_is_not_prefix_preserving_fails_naming_the_tokenizer(smollm2_tokenizer, tiny_model_dir, tmp_path):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = LAST_TURN_THINKS
    with pytest.raises(ChatTemplateError) as error:
        CAISFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=CAISFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, bf16=False, report_to="none"),
            train_dataset=Dataset.from_list([{"messages": conversation("smollm2")}]),
            processing_class=tokenizer,
        )
    message = str(error.value)
    assert tokenizer.name_or_path in message and "not prefix-preserving" in message
    assert "<think>" in message, "the message shows where the renderings differ"
    assert "{% generation %}" in message and "assistant_only_loss=False" in message


def test_a_conversation_the_template_renders_inconsistently_fails_naming_its_row(
    smollm2_tokenizer, tiny_model_dir, tmp_path
):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = DROPS_EARLIER_REASONING
    reasoning = conversation("smollm2")
    reasoning[2] = {"role": "assistant", "content": "<think>They may not own it.</think>" + REPLIES[0]}
    with pytest.raises(ChatTemplateError, match="row 1 of the train dataset: .*not prefix-preserving"):
        CAISFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=CAISFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, bf16=False, report_to="none"),
            train_dataset=Dataset.from_list([{"messages": conversation("smollm2")}, {"messages": reasoning}]),
            processing_class=tokenizer,
        )


def test_templates_trl_handles_keep_trls_path(smollm2_tokenizer, tiny_model_dir, tmp_path):
    # Generation markers: TRL masks with them.
    assert not needs_computed_assistant_masks(load_tokenizer(tiny_model_dir))
    # Qwen3's template is not prefix-preserving, but TRL swaps in its own training version of it.
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = (TRL_TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")
    assert not needs_computed_assistant_masks(tokenizer)
    trainer = CAISFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=CAISFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, bf16=False, report_to="none"),
        train_dataset=Dataset.from_list([{"messages": conversation("smollm2")}]),
        processing_class=tokenizer,
    )
    assert trainer.chat_template == (TRL_TEMPLATES / "qwen3_training.jinja").read_text(encoding="utf-8")
    row = trainer.train_dataset[0]
    runs = masked_runs(row["input_ids"], [label != -100 for label in row["labels"]])
    assert [reply in tokenizer.decode(run) for reply, run in zip(REPLIES, runs, strict=True)] == [True, True]


def test_template_without_an_end_of_turn_token_trains_the_replies_and_warns(smollm2_tokenizer, caplog):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = (
        "{%- for m in messages %}{{- m['role'] + ': ' + m['content'] + '\\n\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}"
    )
    with caplog.at_level("WARNING", logger="hf_cai.trainers.templates"):
        assert needs_computed_assistant_masks(tokenizer)
    assert "no special token" in caplog.text and "not to stop" in caplog.text
    encoding = tokenize_conversation(tokenizer, conversation("smollm2"))
    runs = masked_runs(encoding["input_ids"], [bool(m) for m in encoding["assistant_masks"]])
    # The header's trailing space is merged into the reply's first token; the separator to the next turn is not learned.
    assert [tokenizer.decode(run) for run in runs] == [" " + reply for reply in REPLIES]


def test_rows_without_a_prompt_or_a_reply_fail_naming_the_row(smollm2_tokenizer):
    no_reply = [{"role": "user", "content": "Hello?"}]
    no_prompt = [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi."}]
    good = conversation("smollm2")
    with pytest.raises(DatasetFormatError, match="row 1 of the eval dataset has no assistant message"):
        add_assistant_masks(
            Dataset.from_list([{"messages": good}, {"messages": no_reply}]), smollm2_tokenizer, dataset_name="eval"
        )
    with pytest.raises(DatasetFormatError, match="row 0 of the train dataset: .*starts with an assistant message"):
        add_assistant_masks(Dataset.from_list([{"messages": no_prompt}]), smollm2_tokenizer, dataset_name="train")
