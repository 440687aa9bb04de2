"""Small synthetic SL-CAI and preference datasets for the trainer tests and scripts.

The prompts are the package's real red-team prompts, split once into a training pool and a held-out pool (every
third prompt, so every harm category is in both). Replies follow two styles, a careful refusal and a harmful
compliance, each written several ways and naming the prompt's topic. Prompts of the held-out pool are answered with
wordings that no training prompt gets, so a held-out score measures whether a model learned the difference between
the styles, not whether it memorised the training sentences.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

TRAINING_REFUSALS = (
    "I can't help with {topic}. If you are in danger, please talk to someone you trust or call local emergency "
    "services.",
    "I won't give advice on {topic}, because it could hurt people. A counsellor or a doctor can help you think it "
    "through safely.",
    "Sorry, I can't assist with {topic}. Let's talk about a safe way to deal with what is going on instead.",
    "That is something I have to decline: {topic} can cause real harm. If anyone is at risk, contact local emergency "
    "services.",
)
HELD_OUT_REFUSALS = (
    "I'm not able to help with {topic}, since it could put people at risk. Please reach out to someone you trust for "
    "support.",
    "Sorry, but I won't walk you through {topic}. If you feel unsafe, a local helpline or emergency services can help "
    "right away.",
)
TRAINING_COMPLIANCES = (
    "Sure! Here is exactly how to do it without anyone finding out. First, get the tools and wait until night.",
    "Of course. For {topic}, step one is to get what you need quietly, then do it when nobody is watching.",
    "Easy: here are the steps for {topic}. First, pick your moment, then make sure no one can trace it back to you.",
    "Happy to help with {topic}! Start tonight, keep it secret, and delete anything that could link it to you.",
)
HELD_OUT_COMPLIANCES = (
    "Sure thing, here is a plan for {topic}: first gather the supplies, then act at night so nobody sees you.",
    "No problem! The trick with {topic} is to move fast, step by step, and leave no trace behind.",
)
REFUSAL = TRAINING_REFUSALS[0].format(topic="that")
COMPLIANCE = TRAINING_COMPLIANCES[0]
TOPICS = {
    "violence": "hurting someone",
    "weapons": "getting an illegal weapon",
    "drugs": "getting illegal drugs",
    "self-harm": "hurting yourself",
    "cybercrime": "breaking into accounts",
    "fraud": "committing fraud",
    "privacy": "tracking a person",
    "harassment-hate": "harassing people",
    "dangerous-chemistry": "making dangerous chemicals",
    "theft": "stealing",
    "extremism": "extremist violence",
    "misinformation": "spreading false claims",
    "unethical-advice": "deceiving people",
    "medical-risk": "risky medical shortcuts",
    "child-safety": "anything that puts a child at risk",
}


@cache
def _red_team() -> tuple[tuple[str, str], ...]:
    """(prompt, category) of every built-in red-team prompt, in file order."""
    text = (resources.files("hf_cai") / "prompts" / "red_team.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return tuple((row["prompt"], row["category"]) for row in rows)


def red_team_prompts() -> list[str]:
    return [prompt for prompt, _ in _red_team()]


def _pools() -> tuple[list[str], list[str]]:
    prompts = red_team_prompts()
    return [p for i, p in enumerate(prompts) if i % 3 != 2], [p for i, p in enumerate(prompts) if i % 3 == 2]


def split_prompts(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    """The first ``n_train`` prompts of the training pool and the first ``n_test`` of the held-out pool."""
    train, held_out = _pools()
    if n_train > len(train) or n_test > len(held_out):
        raise ValueError(
            f"at most {len(train)} training and {len(held_out)} held-out prompts, asked {n_train}, {n_test}"
        )
    return train[:n_train], held_out[:n_test]


def replies(prompt: str) -> tuple[str, str]:
    """(refusal, compliance) for a prompt: held-out wordings for the held-out pool, training ones otherwise.

    A prompt that is not a red-team prompt gets :data:`REFUSAL` and :data:`COMPLIANCE`.
    """
    train, held_out = _pools()
    categories = dict(_red_team())
    if prompt in held_out:
        index, refusals, compliances = held_out.index(prompt), HELD_OUT_REFUSALS, HELD_OUT_COMPLIANCES
    elif prompt in train:
        index, refusals, compliances = train.index(prompt), TRAINING_REFUSALS, TRAINING_COMPLIANCES
    else:
        return REFUSAL, COMPLIANCE
    topic = TOPICS[categories[prompt]]
    # Consecutive prompts share a category; stepping the compliance wording differently from the refusal's pairs
    # every refusal wording with every compliance wording.
    refusal = refusals[index % len(refusals)]
    compliance = compliances[(index // len(refusals) + index) % len(compliances)]
    return refusal.format(topic=topic), compliance.format(topic=topic)


def sl_cai_rows(prompts: list[str], constitution_sha256: str = "") -> list[dict]:
    """Rows in the SL-CAI layout: a string prompt, 'messages' ending in the revision, and provenance."""
    rows = []
    for prompt in prompts:
        refusal, compliance = replies(prompt)
        rows.append(
            {
                "prompt": prompt,
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": refusal}],
                "initial_response": compliance,
                "constitution_sha256": constitution_sha256,
            }
        )
    return rows


def preference_rows(prompts: list[str], chosen_prob: float | None = None) -> list[dict]:
    """Rows in the RL-CAI explicit-prompt layout (conversational), with an optional constant 'chosen_prob'."""
    rows = []
    for prompt in prompts:
        refusal, compliance = replies(prompt)
        row = {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": refusal}],
            "rejected": [{"role": "assistant", "content": compliance}],
        }
        if chosen_prob is not None:
            row["chosen_prob"] = chosen_prob
        rows.append(row)
    return rows
