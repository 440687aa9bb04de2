"""The tiny offline models load with the Auto classes and support assistant-only loss."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def test_tiny_chat_model_reloads_and_generates(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    messages = [{"role": "user", "content": "Hello there"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # Byte-level BPE: any text round-trips.
    sample = "Ünïcode, emoji 🙂 and code: x = {'a': 1}"
    assert tokenizer.decode(tokenizer(sample)["input_ids"]) == sample


def test_chat_template_marks_assistant_tokens(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "Question?"},
        {"role": "assistant", "content": "Answer."},
    ]
    encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    mask = encoded["assistant_masks"]
    kept = [token for token, keep in zip(encoded["input_ids"], mask) if keep]
    assert tokenizer.decode(kept) == "Answer.<|im_end|>"


def test_tiny_reward_model_scores(tiny_reward_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir)
    batch = tokenizer(["a short text", "another, longer piece of text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 1)
    assert model.config.pad_token_id == tokenizer.pad_token_id
