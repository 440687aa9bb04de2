"""How many of a model's replies the SL-CAI quality gates would flag: :func:`reply_quality_of`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.stats import Proportion

__all__ = ["reply_quality_of"]


def reply_quality_of(replies: Sequence[str], constitution: Constitution) -> dict[str, Any]:
    """How many replies the SL-CAI quality gates would flag (:func:`~hf_cai.builders.quality_gates.flag_reply`):
    ``{"rate", "ci95", "flagged", "n", "counts": {flag: n}}``. A model trained on botched revisions answers with
    repeated sentences, the constitution's requests read back or leaked role headers, whatever its refusal rates."""
    from hf_cai.builders.quality_gates import flag_reply

    counts: dict[str, int] = {}
    flagged = 0
    for reply in replies:
        flags = flag_reply(reply, constitution)
        flagged += bool(flags)
        for flag in flags:
            counts[flag] = counts.get(flag, 0) + 1
    low, high = Proportion("", flagged, len(replies)).interval
    return {"rate": flagged / len(replies) if replies else None, "ci95": [low, high], "flagged": flagged,
            "n": len(replies), "counts": counts}
