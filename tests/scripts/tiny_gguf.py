"""A tiny Q4_1 GGUF chat model: the tiny chat model of ``hf_cai.tiny`` written in llama.cpp's layout, so that
converting a GGUF file (``hf_cai.gguf.convert_gguf``) runs end to end in seconds."""

from __future__ import annotations

import json
from pathlib import Path

# transformers' GGUF loader names llama tensors after llama.cpp; these are the tiny model's, per layer and overall.
_LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_MODEL_TENSORS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _gguf_name(name: str) -> str:
    stem = name.removesuffix(".weight")
    if stem in _MODEL_TENSORS:
        return f"{_MODEL_TENSORS[stem]}.weight"
    _, _, layer, rest = stem.split(".", 3)  # model.layers.<i>.<module>
    return f"blk.{layer}.{_LAYER_TENSORS[rest]}.weight"


def _llama_cpp_order(weight, heads: int):
    """The rows of a query or key projection in llama.cpp's order (transformers' GGUF loader undoes it)."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def write_tiny_gguf(path: str | Path, model_dir: str | Path) -> Path:
    """Write the tiny chat model saved in ``model_dir`` (``hf_cai.tiny.build_tiny_chat_model``) as a GGUF file whose
    matrices are Q4_1-quantised (file type ``MOSTLY_Q4_1``, as SmolLM2's embedded file), with its tokenizer and chat
    template, and return its path."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
    from gguf.quants import quantize
    from safetensors.numpy import load_file

    model_dir, path = Path(model_dir), Path(path)
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    chat_template = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
    if chat_template is None:
        chat_template = (model_dir / "chat_template.jinja").read_text()
    vocab = dict(tokenizer["model"]["vocab"])
    special = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    vocab.update(special)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in tokenizer["model"]["merges"]]

    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny-chat")
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_1)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if token in special else TokenType.NORMAL for token in tokens])
    writer.add_token_merges(merges)
    if config.get("bos_token_id") is not None:
        writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_chat_template(chat_template)

    weights = load_file(str(model_dir / "model.safetensors"))
    if "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    for name, value in sorted(weights.items()):
        value = value.astype(np.float32)
        if name.endswith("q_proj.weight"):
            value = _llama_cpp_order(value, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            value = _llama_cpp_order(value, config["num_key_value_heads"])
        if value.ndim == 2:
            writer.add_tensor(_gguf_name(name), quantize(value, GGMLQuantizationType.Q4_1),
                              raw_dtype=GGMLQuantizationType.Q4_1)
        else:
            writer.add_tensor(_gguf_name(name), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
