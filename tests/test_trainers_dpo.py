"""CAIDPOTrainer: soft-label loss against TRL's, learning on held-out pairs, continuing a saved SFT adapter against
a frozen copy of it, data errors before training."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from scripts.saved_adapter import adapter_weights, parameter_name, save_sft_adapter
from scripts.synthetic_cai import preference_rows, split_prompts
from trl import DPOConfig, DPOTrainer

from hf_cai.modeling import load_tokenizer
from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer, DatasetFormatError
from hf_cai.trainers.data import validate_chosen_prob

pytestmark = pytest.mark.min_versions

BETA = 0.5


def _config(output_dir, **overrides) -> dict:
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=1,
        beta=BETA,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        seed=3,
    )
    return settings | overrides


def _random_adapter() -> LoraConfig:
    """A LoRA adapter with random (not zero) B matrices, so policy and reference disagree from the first step."""
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")


def _first_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def _sequence_logps(model, batch) -> torch.Tensor:
    """Sum of completion-token log-probs per row, from the model's full logits (independent of TRL's fused head)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)


def _margins(trainer, batch) -> torch.Tensor:
    """beta * ((policy - reference) chosen - (policy - reference) rejected), reference = adapter disabled."""
    model = trainer.model
    with torch.no_grad():
        policy = _sequence_logps(model, batch)
        with model.disable_adapter():
            reference = _sequence_logps(model, batch)
    chosen, rejected = (policy - reference).chunk(2)
    return BETA * (chosen - rejected)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_soft_label_loss_is_trl_loss_at_p1_and_cross_entropy_otherwise(tiny_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(4, 0)
    probabilities = [1.0, 0.3, 0.5, 0.0]
    soft_rows = [row | {"chosen_prob": p} for row, p in zip(preference_rows(prompts), probabilities, strict=True)]
    ours = CAIDPOTrainer(
        model=str(tiny_model_dir),
        args=CAIDPOConfig(**_config(tmp_path / "ours")),
        train_dataset=Dataset.from_list(soft_rows),
        processing_class=tokenizer,
        peft_config=_random_adapter(),
    )
    theirs = DPOTrainer(
        model=str(tiny_model_dir),
        args=DPOConfig(**_config(tmp_path / "theirs")),
        train_dataset=Dataset.from_list(preference_rows(prompts)),
        processing_class=tokenizer,
        peft_config=_random_adapter(),
    )
    assert ours.soft_labels
    batch = _first_batch(ours)
    assert sorted(batch["chosen_prob"].tolist()) == pytest.approx(sorted(probabilities))
    margins = _margins(ours, batch)
    assert margins.abs().min() > 1e-3, "the random adapter should give non-zero margins"

    p = batch["chosen_prob"]
    expected = (
        -p * torch.nn.functional.logsigmoid(margins) - (1 - p) * torch.nn.functional.logsigmoid(-margins)
    ).mean()
    with torch.no_grad():
        soft_loss = ours.compute_loss(ours.model, dict(batch))
        ones_loss = ours.compute_loss(ours.model, dict(batch) | {"chosen_prob": torch.ones(4)})
        trl_loss = theirs.compute_loss(theirs.model, {k: v for k, v in batch.items() if k != "chosen_prob"})
    assert soft_loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(ones_loss.item() - trl_loss.item()) < 1e-6
    assert trl_loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(margins).mean().item(), abs=1e-5)


def test_precomputed_reference_gives_the_same_soft_loss(tiny_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(4, 0)
    dataset = Dataset.from_list(preference_rows(prompts, chosen_prob=0.25))
    losses = []
    for precompute in (False, True):
        trainer = CAIDPOTrainer(
            model=str(tiny_model_dir),
            args=CAIDPOConfig(**_config(tmp_path / f"pre-{precompute}", precompute_ref_log_probs=precompute)),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_random_adapter(),
        )
        batch = _first_batch(trainer)
        assert ("ref_chosen_logps" in batch) is precompute
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, batch).item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


@pytest.mark.slow
def test_half_probability_drives_margins_to_zero(tiny_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(8, 0)
    trainer = CAIDPOTrainer(
        model=str(tiny_model_dir),
        args=CAIDPOConfig(**_config(tmp_path, max_steps=8, learning_rate=1e-2, lr_scheduler_type="constant")),
        train_dataset=Dataset.from_list(preference_rows(prompts, chosen_prob=0.5)),
        processing_class=tokenizer,
        peft_config=_random_adapter(),
    )
    batch = _first_batch(trainer)
    before = _margins(trainer, batch).abs().mean().item()
    trainer.train()
    after = _margins(trainer, batch).abs().mean().item()
    assert after < 0.6 * before


@pytest.mark.slow
def test_qlora_dpo_raises_margin_and_accuracy_on_held_out_pairs(tiny_model_dir, tokenizer, tmp_path):
    train_prompts, test_prompts = split_prompts(24, 12)
    trainer = CAIDPOTrainer(
        model=str(tiny_model_dir),
        args=CAIDPOConfig(
            output_dir=str(tmp_path),
            qlora_profile="cpu",
            max_steps=15,
            learning_rate=5e-3,
            beta=BETA,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(preference_rows(train_prompts, chosen_prob=0.9)),
        processing_class=tokenizer,
        constitution="harmless",
    )
    assert trainer.ref_model is None, "the reference must be the adapter-disabled policy, not a second model"
    assert getattr(trainer.model, "is_loaded_in_4bit", False)
    held_out = Dataset.from_list(preference_rows(test_prompts))
    before = trainer.evaluate(held_out)
    trainer.train()
    after = trainer.evaluate(held_out)
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 0.5
    assert after["eval_rewards/accuracies"] >= 0.9 > before["eval_rewards/accuracies"]


def test_chosen_prob_must_be_a_probability(tiny_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(5, 0)
    rows = preference_rows(prompts, chosen_prob=0.7)
    rows[3]["chosen_prob"] = 1.5
    with pytest.raises(DatasetFormatError, match=r"train dataset: 'chosen_prob' must be a probability.*row 3 has 1\.5"):
        CAIDPOTrainer(
            model=str(tiny_model_dir),
            args=CAIDPOConfig(**_config(tmp_path)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    with pytest.raises(DatasetFormatError, match=r"row 1 has nan \(2 bad rows"):
        validate_chosen_prob([0.2, math.nan, None], source="the train dataset")


def test_missing_columns_name_found_expected_and_builder(tiny_model_dir, tokenizer, tmp_path):
    rows = [{"prompt": "hello", "response": "hi"}]
    with pytest.raises(DatasetFormatError) as error:
        CAIDPOTrainer(
            model=str(tiny_model_dir),
            args=CAIDPOConfig(**_config(tmp_path)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    message = str(error.value)
    assert "['prompt', 'response']" in message and "'chosen' and 'rejected'" in message
    assert "hf_cai.builders.ai_feedback" in message


def test_soft_labels_refuse_losses_they_do_not_define(tiny_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(2, 0)
    with pytest.raises(ValueError, match=r"sigmoid DPO loss only.*loss_type=\['ipo'\]"):
        CAIDPOTrainer(
            model=str(tiny_model_dir),
            args=CAIDPOConfig(**_config(tmp_path, loss_type="ipo")),
            train_dataset=Dataset.from_list(preference_rows(prompts, chosen_prob=0.6)),
            processing_class=tokenizer,
        )


def test_sl_cai_preference_split_trains_with_implicit_prompt(tiny_model_dir, tokenizer, tmp_path):
    """The SL-CAI train_prefs layout: a string prompt beside full chosen / rejected conversations."""
    prompts, _ = split_prompts(4, 0)
    rows = [
        {
            "prompt": row["prompt"][0]["content"],
            "chosen": row["prompt"] + row["chosen"],
            "rejected": row["prompt"] + row["rejected"],
        }
        for row in preference_rows(prompts)
    ]
    trainer = CAIDPOTrainer(
        model=str(tiny_model_dir),
        args=CAIDPOConfig(**_config(tmp_path)),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_random_adapter(),
    )
    assert not trainer.soft_labels
    example = trainer.train_dataset[0]
    assert tokenizer.decode(example["prompt_ids"]).startswith("<|im_start|>user\n" + prompts[0])
    assert trainer.train().global_step == 1


def test_dpo_continues_a_saved_sft_adapter_against_a_frozen_copy(tiny_model_dir, tokenizer, tmp_path, one_torch_thread):
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft" / "final")
    prompts, _ = split_prompts(4, 0)
    trainer = CAIDPOTrainer(
        model=str(sft),
        args=CAIDPOConfig(**_config(tmp_path / "dpo", max_steps=3, learning_rate=1e-2)),
        train_dataset=Dataset.from_list(preference_rows(prompts, chosen_prob=0.9)),
        processing_class=tokenizer,
    )
    model = trainer.model
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(".default." in name for name in trainable), "the SFT adapter itself is trained"
    saved = adapter_weights(sft)
    parameters = dict(model.named_parameters())
    for key, value in saved.items():
        assert torch.equal(parameters[parameter_name(key, "default")], value), key
        assert torch.equal(parameters[parameter_name(key, "ref")], value), key

    # The reference is the SFT policy, not the bare base: before training, policy and reference agree exactly.
    before = trainer.evaluate(Dataset.from_list(preference_rows(prompts)))
    assert before["eval_rewards/chosen"] == 0 and before["eval_rewards/rejected"] == 0
    assert trainer.train().global_step == 3
    after = dict(model.named_parameters())
    assert all(not torch.equal(after[parameter_name(key, "default")], value) for key, value in saved.items())
    assert all(torch.equal(after[parameter_name(key, "ref")], value) for key, value in saved.items())

    trainer.save_model()
    output = tmp_path / "dpo"
    assert not (output / "ref").exists(), "the frozen reference copy is not part of the trained model"
    trained = adapter_weights(output)
    assert trained.keys() == saved.keys()
    assert any(not torch.equal(trained[key], saved[key]) for key in saved)


def test_a_saved_adapter_cannot_take_a_new_adapter_config(tiny_model_dir, tokenizer, tmp_path):
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft", with_tokenizer=False)
    with pytest.raises(ValueError, match=r"is a saved adapter, which the trainer trains further.*Drop `peft_config`"):
        CAIDPOTrainer(
            model=str(sft),
            args=CAIDPOConfig(**_config(tmp_path)),
            train_dataset=Dataset.from_list(preference_rows(split_prompts(2, 0)[0])),
            processing_class=tokenizer,
            peft_config=_random_adapter(),
        )


def test_pairs_the_quality_gates_flagged_are_left_out(tiny_model_dir, tokenizer, tmp_path, caplog):
    """The SL-CAI train_prefs split carries the gates' flags: a flagged revision is no 'chosen' reply to learn."""
    from hf_cai.builders import QualityGateError

    flags = [[], ["degenerate"], [], []]
    rows = [{**row, "quality_flags": row_flags} for row, row_flags in zip(preference_rows(split_prompts(4, 0)[0]), flags)]
    with caplog.at_level("INFO", logger="hf_cai.trainers"):
        trainer = CAIDPOTrainer(
            model=str(tiny_model_dir),
            args=CAIDPOConfig(**_config(tmp_path)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    assert len(trainer.train_dataset) == 3 and trainer.cai_quality.flagged == 1
    assert "training on 3 of 4 rows (75%): the quality gates flagged 1 (degenerate 1" in caplog.text
    with pytest.raises(QualityGateError, match=r"kept only 3 of 4 rows \(75%\), less than min_kept_share 90%"):
        CAIDPOTrainer(
            model=str(tmp_path / "not-loaded-because-the-check-comes-first"),
            args=CAIDPOConfig(**_config(tmp_path), min_kept_share=0.9),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
