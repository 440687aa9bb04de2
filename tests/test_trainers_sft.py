"""CAISFTTrainer: QLoRA SFT on SL-CAI data learns held-out revisions; checkpoints carry the constitution and reload."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from scripts.synthetic_cai import sl_cai_rows, split_prompts
from transformers import AutoModelForCausalLM

from hf_cai.constitution import Constitution
from hf_cai.modeling import bnb_4bit_config, load_tokenizer
from hf_cai.trainers import CAISFTConfig, CAISFTTrainer, DatasetFormatError
from hf_cai.trainers.base import resolve_training_constitution
from hf_cai.trainers.qlora import peft_config_for

pytestmark = pytest.mark.min_versions


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_qlora_sft_learns_held_out_revisions_and_checkpoints_reload(tiny_model_dir, tokenizer, tmp_path):
    harmless = Constitution.builtin("harmless")
    train_prompts, test_prompts = split_prompts(24, 8)
    # The tiny model's output head is random: it is trained too, or nothing but memorised sentences could be learned.
    adapter = dataclasses.replace(peft_config_for("cpu"), modules_to_save=["lm_head"])
    trainer = CAISFTTrainer(
        model=str(tiny_model_dir),
        args=CAISFTConfig(
            output_dir=str(tmp_path),
            qlora_profile="cpu",
            assistant_only_loss=True,
            max_steps=24,
            save_steps=12,
            learning_rate=2e-2,
            logging_steps=4,
            report_to="none",
        ),
        # The SL-CAI layout: a string prompt beside 'messages', and the constitution's sha256 as provenance.
        train_dataset=Dataset.from_list(sl_cai_rows(train_prompts, harmless.sha256)),
        processing_class=tokenizer,
        peft_config=adapter,
    )
    assert trainer.constitution == harmless, "the built-in matching the dataset's constitution_sha256 is used"
    # Held-out prompts answered in refusal wordings that no training row uses, and the same prompts answered with
    # the harmful compliance as if it were the revision: SFT must learn the refusal style, not text in general.
    held_out = Dataset.from_list(sl_cai_rows(test_prompts, harmless.sha256))
    complying = held_out.map(lambda row: {"messages": [row["messages"][0],
                                                       {"role": "assistant", "content": row["initial_response"]}]})
    refusal_before, compliance_before = (trainer.evaluate(data)["eval_loss"] for data in (held_out, complying))
    trainer.train()
    refusal_after, compliance_after = (trainer.evaluate(data)["eval_loss"] for data in (held_out, complying))
    assert refusal_after < refusal_before - 0.5
    assert compliance_after > compliance_before - 0.1

    trainer.save_model()
    for folder in (tmp_path / "checkpoint-12", tmp_path):
        names = {path.name for path in folder.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
        assert Constitution.load(folder / "constitution.yaml").sha256 == harmless.sha256
        record = json.loads((folder / "cai_training.json").read_text())
        assert record["constitution"] == {"name": "harmless", "version": harmless.version, "sha256": harmless.sha256}
    assert json.loads((tmp_path / "checkpoint-12" / "cai_training.json").read_text())["global_step"] == 12
    assert record["stage"] == "sft" and record["method"] == "qlora" and record["quantization"] == "nf4"
    assert record["lora"]["r"] == 8 and "q_proj" in record["lora"]["target_modules"]
    assert record["base_model"] == str(tiny_model_dir) and record["global_step"] == 24
    assert record["hyperparameters"]["assistant_only_loss"] is True
    assert record["dataset_sizes"] == {"train": 24, "eval": None}
    assert record["metrics"]["train_loss"] > 0 and record["versions"]["trl"]
    card = (tmp_path / "README.md").read_text()
    assert all(tag in card for tag in ("constitutional-ai", "hf-cai", "qlora", "sft"))

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=bnb_4bit_config())
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    inputs = tokenizer.apply_chat_template(held_out[0]["messages"], return_tensors="pt", return_dict=True)
    trainer.model.eval()
    with torch.no_grad():
        trained_logits = trainer.model(**inputs).logits
        reloaded_logits = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            base_logits = reloaded(**inputs).logits
    # The trainer keeps the adapter in bfloat16 (TRL's QLoRA recipe) and PEFT reloads it in float32, so the reloaded
    # model matches up to rounding: far closer to the trained model than the base model is.
    reload_error = (reloaded_logits - trained_logits).abs().mean()
    training_change = (base_logits - trained_logits).abs().mean()
    assert training_change > 0.2 and reload_error < 0.1 * training_change


def test_missing_columns_name_found_expected_and_builder(tiny_model_dir, tokenizer, tmp_path):
    with pytest.raises(DatasetFormatError) as error:
        CAISFTTrainer(
            model=str(tiny_model_dir),
            args=CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none"),
            train_dataset=Dataset.from_list([{"question": "hi", "answer": "hello"}]),
            processing_class=tokenizer,
        )
    message = str(error.value)
    assert "['answer', 'question']" in message and "'messages'" in message
    assert "hf_cai.builders.critique_revision" in message


def test_tokenizer_without_chat_template_fails_before_loading(tiny_model_dir, tmp_path):
    plain = load_tokenizer(tiny_model_dir)
    plain.chat_template = None
    with pytest.raises(DatasetFormatError, match="no chat template.*chat_template_path"):
        CAISFTTrainer(
            model=str(tmp_path / "not-loaded-because-the-check-comes-first"),
            args=CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none"),
            train_dataset=Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0])),
            processing_class=plain,
        )


def test_constitution_is_checked_against_the_dataset_provenance(caplog):
    harmless, helpful = Constitution.builtin("harmless"), Constitution.builtin("helpful-honest")
    dataset = Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0], harmless.sha256))
    assert resolve_training_constitution(None, dataset) == harmless
    assert resolve_training_constitution(None, Dataset.from_list(sl_cai_rows(["hi"], "0" * 64))) is None
    with caplog.at_level("WARNING"):
        assert resolve_training_constitution(helpful, dataset) == helpful
    assert harmless.sha256 in caplog.text and "will not match the data" in caplog.text


# ----------------------------------------------------------------------------- the quality gates' flags
FLAGS = [[], ["degenerate"], [], ["truncated", "echo"], [], []]


def _flagged_rows(flags=FLAGS):
    rows = sl_cai_rows(split_prompts(len(flags), 0)[0])
    return Dataset.from_list([{**row, "quality_flags": row_flags} for row, row_flags in zip(rows, flags)])


def _args(tmp_path, **changes):
    return CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none", assistant_only_loss=True, **changes)


def test_rows_the_quality_gates_flagged_are_left_out_and_the_log_says_so(tiny_model_dir, tokenizer, tmp_path, caplog):
    data = _flagged_rows()
    evaluation = _flagged_rows([["degenerate"], [], []])
    with caplog.at_level("INFO", logger="hf_cai.trainers"):
        trainer = CAISFTTrainer(model=str(tiny_model_dir), args=_args(tmp_path), train_dataset=data,
                                eval_dataset=evaluation, processing_class=tokenizer)
    kept = [row["messages"] for row, flags in zip(data, FLAGS) if not flags]
    assert len(trainer.train_dataset) == 4 and len(trainer.eval_dataset) == 2
    # The rows trained on are the kept ones: their token ids are those of the kept conversations, in order.
    assert trainer.train_dataset["input_ids"] == [tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)[
        "input_ids"] for m in kept]
    assert (trainer.cai_quality.kept, trainer.cai_quality.total, trainer.cai_quality.flagged) == (4, 6, 2)
    assert "training on 4 of 6 rows (67%): the quality gates flagged 2 (truncated 1, degenerate 1, echo 1" in caplog.text
    assert "evaluating on 2 of 3 eval rows" in caplog.text


def test_exclude_flagged_rows_false_trains_on_every_row_and_warns(tiny_model_dir, tokenizer, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hf_cai.trainers"):
        trainer = CAISFTTrainer(model=str(tiny_model_dir), args=_args(tmp_path, exclude_flagged_rows=False),
                                train_dataset=_flagged_rows(), processing_class=tokenizer)
    assert len(trainer.train_dataset) == 6 and trainer.cai_quality.kept == 6
    assert "training on all 6 rows, 2 of them flagged by the quality gates" in caplog.text


def test_too_few_kept_rows_stop_before_the_model_is_loaded(tokenizer, tmp_path):
    from hf_cai.builders import QualityGateError

    mostly_flagged = _flagged_rows([[], ["degenerate"], ["degenerate"], ["truncated"]])
    missing_model = str(tmp_path / "not-loaded-because-the-check-comes-first")
    with pytest.raises(QualityGateError) as raised:
        CAISFTTrainer(model=missing_model, args=_args(tmp_path), train_dataset=mostly_flagged, processing_class=tokenizer)
    message = str(raised.value)
    assert "kept only 1 of 4 rows (25%), less than min_kept_share 50%" in message
    assert "exclude_flagged_rows=False" in message and raised.value.result.kept == 1
    with pytest.raises(QualityGateError, match="the quality gates left none of the 2 training rows"):
        CAISFTTrainer(model=missing_model, args=_args(tmp_path, min_kept_share=0.0),
                      train_dataset=_flagged_rows([["degenerate"], ["too_short"]]), processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"min_kept_share must be in \[0, 1\], got 2"):
        _args(tmp_path, min_kept_share=2)
