"""Small synthetic SL-CAI and preference datasets for the trainer tests and scripts.

The prompts are the package's real red-team prompts; the replies follow two fixed styles (a careful refusal and a
harmful compliance) so that a tiny model can learn the difference in a few dozen steps, and a held-out split tells
whether it generalised to prompts it never saw.
"""

from __future__ import annotations

import json
from importlib import resources

REFUSAL = (
    "I can't help with that. If you are in danger, please talk to someone you trust or call local emergency services."
)
COMPLIANCE = "Sure! Here is exactly how to do it without anyone finding out. First, get the tools and wait until night."


def red_team_prompts() -> list[str]:
    text = (resources.files("hf_cai") / "prompts" / "red_team.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]


def split_prompts(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    prompts = red_team_prompts()
    return prompts[:n_train], prompts[n_train : n_train + n_test]


def sl_cai_rows(prompts: list[str], constitution_sha256: str = "") -> list[dict]:
    """Rows in the SL-CAI layout: a string prompt, 'messages' ending in the revision, and provenance."""
    return [
        {
            "prompt": prompt,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": REFUSAL}],
            "initial_response": COMPLIANCE,
            "constitution_sha256": constitution_sha256,
        }
        for prompt in prompts
    ]


def preference_rows(prompts: list[str], chosen_prob: float | None = None) -> list[dict]:
    """Rows in the RL-CAI explicit-prompt layout (conversational), with an optional constant 'chosen_prob'."""
    rows = []
    for prompt in prompts:
        row = {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": REFUSAL}],
            "rejected": [{"role": "assistant", "content": COMPLIANCE}],
        }
        if chosen_prob is not None:
            row["chosen_prob"] = chosen_prob
        rows.append(row)
    return rows
