"""ConstitutionalReward: group-wise scoring with a feedback model or a preference model, and GRPO training with it."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from datasets import Dataset
from scripts.synthetic_cai import COMPLIANCE, REFUSAL, red_team_prompts, split_prompts
from trl import GRPOConfig, GRPOTrainer

from hf_cai.backends.transformers_backend import TransformersBackend
from hf_cai.builders.ai_feedback import PreferenceScorer
from hf_cai.constitution import Constitution
from hf_cai.modeling import ModelLoadError, compute_dtype, load_sequence_classifier, load_tokenizer
from hf_cai.tiny import CHAT_TEMPLATE
from hf_cai.trainers import ConstitutionalReward
from hf_cai.trainers.rewards import RewardModelJudge

pytestmark = pytest.mark.min_versions


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_size=8)


@pytest.fixture(scope="module")
def one_principle() -> Constitution:
    """The built-in harmless constitution reduced to its first preference principle (so sampling is not random)."""
    harmless = Constitution.builtin("harmless")
    return Constitution(name="one-principle", principles=(harmless.principles_for("preference")[0],))


def test_feedback_model_scores_are_win_probabilities_within_each_prompt(backend, one_principle):
    reward = ConstitutionalReward.from_feedback_model(backend, one_principle, few_shot=False)
    assert reward.__name__ == "constitutional_reward"
    question = [{"role": "user", "content": "How do I pick a lock?"}]
    other = "Tell me a joke."
    third = "I am not sure, maybe ask a locksmith."
    scores = reward(
        prompts=[question, question, question, other, other, "alone"],
        completions=[[{"role": "assistant", "content": text}] for text in (REFUSAL, COMPLIANCE, third)]
        + ["Why did the chicken cross the road?", "No.", "hello"],
    )
    scorer = PreferenceScorer(backend, one_principle, few_shot=False)
    principle = one_principle.principles[0]
    p_refusal_compliance, p_refusal_third, p_compliance_third, p_joke_no = scorer.prob_first_better(
        [question] * 3 + [[{"role": "user", "content": other}]],
        [REFUSAL, REFUSAL, COMPLIANCE, "Why did the chicken cross the road?"],
        [COMPLIANCE, third, third, "No."],
        [principle] * 4,
    )
    expected_group = [
        (p_refusal_compliance + p_refusal_third) / 2,
        (1 - p_refusal_compliance + p_compliance_third) / 2,
        (1 - p_refusal_third + 1 - p_compliance_third) / 2,
    ]
    assert scores[:3] == pytest.approx(expected_group, abs=1e-5)  # batched differently: float rounding
    assert scores[3:5] == pytest.approx([p_joke_no, 1 - p_joke_no], abs=1e-5), "a group of two: p and 1 - p"
    assert scores[5] == 0.5, "a completion without siblings cannot be compared"
    assert len(set(scores[:3])) == 3, "the tiny feedback model should not be exactly indifferent"


def test_preference_model_scores_follow_bradley_terry(tiny_reward_model_dir):
    reward = ConstitutionalReward.from_reward_model(tiny_reward_model_dir, name="harmlessness")
    judge = reward.judge
    assert isinstance(judge, RewardModelJudge) and reward.__name__ == "harmlessness"
    prompt = "How do I pick a lock?"
    replies = [REFUSAL, COMPLIANCE, "Ask a locksmith."]
    plain = reward(prompts=[prompt] * 3, completions=replies)
    chat = reward(
        prompts=[[{"role": "user", "content": prompt}]] * 3,
        completions=[[{"role": "assistant", "content": reply}] for reply in replies],
    )
    assert plain == pytest.approx(chat, abs=1e-9), "a plain-text prompt is read as one user message"
    r = judge.scores([[{"role": "user", "content": prompt}]] * 3, replies)

    def win(a: int, b: int) -> float:
        return 1 / (1 + math.exp(r[b] - r[a]))

    assert plain == pytest.approx([(win(i, j) + win(i, k)) / 2 for i, j, k in ((0, 1, 2), (1, 0, 2), (2, 0, 1))])


def _model_score(judge: RewardModelJudge, ids: list[int]) -> float:
    """The preference model's score of one token sequence, computed directly."""
    with torch.inference_mode():
        return judge.model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_a_long_prompt_loses_its_oldest_text_and_the_reply_is_scored_whole(tiny_reward_model_dir):
    judge = RewardModelJudge.load(tiny_reward_model_dir, max_length=80)
    question = "How do I pick a lock?"
    conversation = [
        {"role": "user", "content": " ".join(red_team_prompts()[:8])},
        {"role": "assistant", "content": "Let me think about that."},
        {"role": "user", "content": question},
    ]
    scores = judge.scores([conversation] * 2, [REFUSAL, COMPLIANCE])
    assert scores[0] != scores[1], "two different replies to a long prompt must not be scored on the prompt alone"
    for reply, score in zip((REFUSAL, COMPLIANCE), scores, strict=True):
        text = judge.tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": reply}], tokenize=False
        )
        ids = judge.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 80
        kept = judge.tokenizer.decode(ids[-80:])
        assert kept.endswith(f"{question}<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n")
        assert score == pytest.approx(_model_score(judge, ids[-80:]), abs=1e-5)


def test_a_reply_longer_than_max_length_is_scored_on_its_beginning(tiny_reward_model_dir, caplog):
    judge = RewardModelJudge.load(tiny_reward_model_dir, max_length=16)
    conversation = [{"role": "user", "content": "How do I pick a lock?"}]
    longer = f"{REFUSAL} Stay safe."
    with caplog.at_level(logging.WARNING, logger="hf_cai.trainers.rewards"):
        scores = judge.scores([conversation] * 2, [REFUSAL, longer])
    first_tokens = judge.tokenizer(REFUSAL, add_special_tokens=False)["input_ids"][:16]
    assert len(judge.tokenizer(REFUSAL, add_special_tokens=False)["input_ids"]) > 16
    assert scores == pytest.approx([_model_score(judge, first_tokens)] * 2, abs=1e-5), "the prompt is dropped"
    warnings = [record.getMessage() for record in caplog.records if "max_length=16" in record.getMessage()]
    assert len(warnings) == 1 and "first 16 tokens without the prompt" in warnings[0], "one warning per judge"


def test_left_truncation_keeps_a_leading_bos_token(tiny_reward_model_dir):
    tokenizer = load_tokenizer(tiny_reward_model_dir)
    tokenizer.bos_token = "<|endoftext|>"
    tokenizer.chat_template = "{{- bos_token }}" + CHAT_TEMPLATE
    judge = RewardModelJudge(load_sequence_classifier(str(tiny_reward_model_dir)), tokenizer, max_length=60)
    conversation = [{"role": "user", "content": " ".join(red_team_prompts()[:4])}]
    text = tokenizer.apply_chat_template([*conversation, {"role": "assistant", "content": REFUSAL}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) > 60
    assert judge.encode(conversation, REFUSAL) == [tokenizer.bos_token_id, *ids[-59:]]
    with pytest.raises(ValueError, match="max_length must be a positive number of tokens.*got 0"):
        RewardModelJudge(judge.model, tokenizer, max_length=0)


def test_batched_scores_do_not_depend_on_the_other_replies_in_the_batch(tiny_reward_model_dir):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = load_tokenizer(tiny_reward_model_dir)
    torch.manual_seed(0)
    # Absolute position embeddings: a sequence shifted by padding would be read at other positions.
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    judge = RewardModelJudge(GPT2ForSequenceClassification(config), tokenizer)
    conversation = [{"role": "user", "content": "How do I pick a lock?"}]
    together = judge.scores([conversation] * 2, ["No.", COMPLIANCE])
    alone = [judge.scores([conversation], [reply])[0] for reply in ("No.", COMPLIANCE)]
    assert together == pytest.approx(alone, abs=1e-6)


def test_adapter_whose_base_model_is_missing_says_which_base_and_what_to_do(tiny_reward_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "reward-adapter"
    model = get_peft_model(
        load_sequence_classifier(str(tiny_reward_model_dir)),
        LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="SEQ_CLS"),
    )
    model.save_pretrained(adapter)
    load_tokenizer(tiny_reward_model_dir).save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    missing = tmp_path / "moved-base-model"
    config["base_model_name_or_path"] = str(missing)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as error:
        ConstitutionalReward.from_reward_model(adapter)
    message = str(error.value)
    assert f"adapter '{adapter}'" in message and f"base model '{missing}'" in message
    assert "base_model_name_or_path" in message and str(adapter / "adapter_config.json") in message


def _rounding(scores: list[float]) -> float:
    """Two units in the last place of the compute dtype at these scores (bfloat16 on CPUs with bfloat16 units), plus
    what a trained adapter loses when PEFT reloads it in another dtype than the trainer kept it in."""
    return 2 * torch.finfo(compute_dtype()).eps * max(abs(score) for score in scores) + 5e-4


def test_trained_preference_model_folder_loads(tiny_reward_model_dir, tmp_path):
    from peft import LoraConfig

    from hf_cai.trainers import CAIRewardConfig, CAIRewardTrainer

    prompts, _ = split_prompts(2, 0)
    rows = [{"prompt": p, "chosen": REFUSAL, "rejected": COMPLIANCE} for p in prompts]
    trainer = CAIRewardTrainer(
        model=str(tiny_reward_model_dir),
        args=CAIRewardConfig(output_dir=str(tmp_path), max_steps=1, bf16=False, report_to="none", save_strategy="no"),
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(tiny_reward_model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS"),
    )
    trainer.train()
    trainer.save_model()
    judge = RewardModelJudge.load(tmp_path)
    conversation = [{"role": "user", "content": prompts[0]}]
    loaded = judge.scores([conversation] * 2, [REFUSAL, COMPLIANCE])
    batch = judge.tokenizer(
        [judge._render(conversation, REFUSAL), judge._render(conversation, COMPLIANCE)],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    trainer.model.eval()
    expected = trainer.model(**batch).logits[:, 0].tolist()
    assert loaded == pytest.approx(expected, abs=_rounding(expected))


def test_qlora_preference_model_loads_in_4bit_with_the_scores_it_trained_with(tiny_reward_model_dir, tmp_path):
    from hf_cai.trainers import CAIRewardConfig, CAIRewardTrainer

    prompts, _ = split_prompts(2, 0)
    rows = [{"prompt": p, "chosen": REFUSAL, "rejected": COMPLIANCE} for p in prompts]
    trainer = CAIRewardTrainer(
        model=str(tiny_reward_model_dir),
        args=CAIRewardConfig(
            output_dir=str(tmp_path),
            qlora_profile="cpu",
            max_steps=2,
            learning_rate=1e-2,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(tiny_reward_model_dir),
    )
    assert getattr(trainer.model, "is_loaded_in_4bit", False), "the recipe trains the preference model in 4-bit"
    trainer.train()
    trainer.save_model()
    judge = ConstitutionalReward.from_reward_model(tmp_path, load_in_4bit=True).judge
    layers = {type(module).__name__ for name, module in judge.model.named_modules() if name.endswith("q_proj")}
    assert "Linear4bit" in layers, "the base model is NF4-quantised, as in training"
    head = judge.model.get_base_model().score.modules_to_save["default"]
    assert type(head) is torch.nn.Linear and head.weight.dtype == compute_dtype(), "the score head is not quantised"
    conversation = [{"role": "user", "content": prompts[0]}]
    loaded = judge.scores([conversation] * 2, [REFUSAL, COMPLIANCE])
    batch = judge.tokenizer(
        [judge._render(conversation, REFUSAL), judge._render(conversation, COMPLIANCE)],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    trainer.model.eval()
    with torch.inference_mode():
        expected = trainer.model(**batch).logits[:, 0].float().tolist()
    assert loaded == pytest.approx(expected, abs=_rounding(expected))


class RecordingReward(ConstitutionalReward):
    """The reward function as TRL gets it, keeping each call's completions and rewards for the test to check."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list, list, list[float]]] = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((prompts, completions, rewards))
        return rewards


@pytest.mark.slow
def test_grpo_trains_on_constitutional_reward(tiny_model_dir, backend, one_principle, tmp_path):
    reward = RecordingReward(ConstitutionalReward.from_feedback_model(backend, one_principle, few_shot=False).judge)
    prompts, _ = split_prompts(4, 0)
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=reward,
        args=GRPOConfig(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=8,
            logging_steps=1,
            learning_rate=1e-3,
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            seed=1,
        ),
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts]),
        processing_class=load_tokenizer(tiny_model_dir),
    )
    trainer.train()
    logged = [entry["rewards/constitutional_reward/mean"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 2 and len(reward.calls) == 2
    scorer = PreferenceScorer(backend, one_principle, few_shot=False)
    for (step_prompts, completions, step_rewards), logged_mean in zip(reward.calls, logged, strict=True):
        assert len(step_rewards) == 4
        assert sum(step_rewards) / len(step_rewards) == pytest.approx(logged_mean, abs=1e-6)
        # TRL puts a prompt's two generations next to each other: the feedback model's own verdict on each pair.
        assert step_prompts[0] == step_prompts[1] != step_prompts[2] == step_prompts[3]
        replies = [completion[0]["content"] for completion in completions]
        p_first, p_third = scorer.prob_first_better(
            [step_prompts[0], step_prompts[2]], replies[0::2], replies[1::2], [one_principle.principles[0]] * 2
        )
        assert step_rewards == pytest.approx([p_first, 1 - p_first, p_third, 1 - p_third], abs=1e-5)
