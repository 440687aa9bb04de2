"""Tiny offline chat models: the embedded default for the demo and the fixture for tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on the package's own texts (built-in
constitutions and prompt sets), and the model is a randomly initialised Llama-architecture network built from a
config. Both save in the standard layout, so ``AutoTokenizer`` / ``AutoModelForCausalLM`` /
``AutoModelForSequenceClassification.from_pretrained(path)`` load them like any Hub checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML with ``{% generation %}`` markers, so TRL's assistant-only loss can mask everything but replies."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a tiny Llama-architecture model.

    Args:
        vocab_size: Target size of the locally trained BPE vocabulary.
        hidden_size: Width of the residual stream.
        intermediate_size: Width of the MLP.
        num_hidden_layers: Number of decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads (grouped-query attention when smaller than the query heads).
        max_position_embeddings: Longest sequence the model accepts.
        seed: Seed of the random initialisation.
        pretrain_steps: Optimizer steps of a short language-model warm-up on the package's chat demonstrations
            (the built-in constitutions' few-shot chats), so the model emits ChatML-shaped, English-like replies
            instead of noise. ``0`` keeps the random initialisation (the test fixture).
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0
    pretrain_steps: int = 0


TOKENIZER_CORPUS = (
    "constitutions/harmless.yaml",
    "constitutions/helpful-honest.yaml",
    "prompts/helpful.jsonl",
    "prompts/red_team.jsonl",
)
"""The package files the tiny tokenizer learns its vocabulary from: a fixed list, so that adding data to the package
does not change the tiny model (tests compare its outputs across runs and processes)."""


def _training_corpus() -> list[str]:
    root = resources.files("hf_cai")
    texts: list[str] = []
    for name in TOKENIZER_CORPUS:
        text = (root / name).read_text(encoding="utf-8")
        texts.extend(line for line in text.splitlines() if line.strip())
    return texts


def build_tiny_tokenizer(output_dir: str | Path, *, vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer with a ChatML template on the package's texts and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        padding_side="left",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(output_dir))
    return fast


def _llama_config(tokenizer, config: TinyModelConfig, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **extra,
    )


def build_tiny_chat_model(output_dir: str | Path, config: TinyModelConfig | None = None) -> Path:
    """Build and save a tiny causal LM with its tokenizer; returns the folder.

    >>> path = build_tiny_chat_model("tiny-chat")  # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    config = config or TinyModelConfig()
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer(output_dir, vocab_size=config.vocab_size)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(_llama_config(tokenizer, config))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    if config.pretrain_steps:
        _warm_up(model, tokenizer, steps=config.pretrain_steps, seed=config.seed)
    model.save_pretrained(str(output_dir))
    logger.info("built tiny chat model (%d parameters) in %s", model.num_parameters(), output_dir)
    return output_dir


def _demonstration_chats() -> list[list[dict[str, str]]]:
    """Every few-shot chat of the built-in constitutions, plus each preference demonstration as a request/reply."""
    from hf_cai.constitution import Constitution

    chats: list[list[dict[str, str]]] = []
    for name in Constitution.list_builtin():
        constitution = Constitution.builtin(name)
        chats.extend([dict(m) for m in chat] for chat in constitution.critique_revision_examples)
        for example in constitution.preference_examples:
            better = example.response_a if example.answer == "A" else example.response_b
            chats.append([{"role": "user", "content": example.prompt}, {"role": "assistant", "content": better}])
    return chats


def _warm_up(model, tokenizer, *, steps: int, seed: int, batch_size: int = 8, length: int = 256) -> None:
    """A short causal-LM warm-up on random windows of the demonstration chats."""
    import random

    import torch

    text = "".join(tokenizer.apply_chat_template(chat, tokenize=False) for chat in _demonstration_chats())
    ids = torch.tensor(tokenizer(text)["input_ids"])
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = [rng.randrange(0, len(ids) - length) for _ in range(batch_size)]
        batch = torch.stack([ids[start : start + length] for start in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    logger.info("warmed up the tiny model for %d steps (final loss %.2f)", steps, loss.item())


def build_tiny_reward_model(output_dir: str | Path, config: TinyModelConfig | None = None) -> Path:
    """Build and save a tiny sequence-classification model (one score) with its tokenizer; returns the folder."""
    import torch
    from transformers import LlamaForSequenceClassification

    config = config or TinyModelConfig()
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer(output_dir, vocab_size=config.vocab_size)
    torch.manual_seed(config.seed)
    model = LlamaForSequenceClassification(_llama_config(tokenizer, config, num_labels=1))
    model.save_pretrained(str(output_dir))
    logger.info("built tiny reward model (%d parameters) in %s", model.num_parameters(), output_dir)
    return output_dir
