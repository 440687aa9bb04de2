"""Quality gates on SL-CAI rows: find the critique→revision rows a model botched, before anything trains on them.

A small model asked to critique and rewrite its own replies often produces text that is no reply at all: the same
sentence over and over ("I'm here to help. I'm here to help."), the revision request read back ("Rewrite the
assistant's last reply to..."), a leaked chat role header (``assistant\\n``, ``<|im_start|>``), a reply cut off at
``max_new_tokens``, or nothing. Training on such rows teaches exactly that. These gates flag each row with the
reasons it is unfit (:data:`QUALITY_FLAGS`), count them for the manifest and the dataset card, leave the flagged rows
out of training, and stop the run with :class:`QualityGateError` when too few rows are left to be worth training on.

>>> result = gate_sl_dataset(dataset["train_sft"], constitution)  # doctest: +SKIP
>>> manifest["quality"] = result.to_dict()  # doctest: +SKIP
>>> train = filter_for_training(dataset["train_sft"], result)  # raises QualityGateError below min_kept_share  # doctest: +SKIP

What is checked (the row schema is :func:`hf_cai.builders.critique_revision.sl_record`'s):

* ``"revised"`` rows: the training target (``completion``) and the final round's revision with every flag, and the
  final round's critique for ``degenerate``, ``echo`` (of the requests), ``too_short`` and ``role_header``. With
  ``check_rounds`` every round's critique and revision is checked the same way. The first reply (the ``rejected``
  side) is never checked: it is meant to be the worse reply.
* ``"helpful"`` rows (answered, not revised): the reply, for ``truncated``, ``degenerate``, ``too_short`` and
  ``role_header``.

It stays one file: the text checks, the row checks and the dataset result are one job (which rows are fit to train
on), sharing one set of thresholds.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hf_cai.errors import HFCAIError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from hf_cai.constitution import Constitution

__all__ = [
    "QUALITY_COLUMN",
    "QUALITY_FILE",
    "QUALITY_FLAGS",
    "QUALITY_FLAG_MEANINGS",
    "QualityGateConfig",
    "QualityGateError",
    "QualityGateResult",
    "SLQualityReport",
    "filter_for_training",
    "flag_reply",
    "flag_sl_row",
    "gate_sl_dataset",
    "gate_sl_splits",
    "with_quality_flags",
]

QUALITY_FLAGS: tuple[str, ...] = ("truncated", "degenerate", "echo", "too_short", "role_header")
"""Every reason a row can be flagged for, in the order :func:`flag_sl_row` reports them:

* ``truncated``: the training target's generation stopped at ``max_new_tokens`` (finish reason ``"length"``), so it
  has no end of turn.
* ``degenerate``: repeated n-grams, a sentence repeated, or one character or word repeated in a run.
* ``echo``: the text repeats a critique or revision request of a principle used in the row (a long shared run of
  words, or nearly all of its content words taken from the request), or contains prompt meta-text such as
  ``"Revision:"``, ``"CritiqueRequest:"`` or ``"Here is the revised response"``.
* ``too_short``: empty, or fewer than ``min_words`` words.
* ``role_header``: a chat role header or template token leaked into the text (``"assistant\\n"`` at the start,
  ``"Human:"`` opening a line, ``<|im_start|>``, ``[INST]``, ``<start_of_turn>`` ...).
"""

QUALITY_FLAG_MEANINGS: dict[str, str] = {
    "truncated": "the training target was cut off at max_new_tokens, with no end of turn",
    "degenerate": "repeated n-grams or sentences, or a character or word repeated in a run",
    "echo": "the text repeats a critique or revision request, or prompt meta-text such as 'Revision:'",
    "too_short": "empty, or fewer words than min_words",
    "role_header": "a chat role header or template token leaked into the text ('assistant\\n', '<|im_start|>', ...)",
}
"""One line per flag of :data:`QUALITY_FLAGS`, for dataset cards and reports."""

QUALITY_COLUMN = "quality_flags"
"""The column of every SL-CAI split that holds its row's flags, ordered as :data:`QUALITY_FLAGS` (``[]``: passed)."""
QUALITY_FILE = "quality.json"
"""The gates' record beside a built SL-CAI dataset's ``dataset/`` folder: :meth:`SLQualityReport.to_dict`."""
SFT_SPLITS = ("train_sft", "test_sft")
"""The splits whose rows are training targets: what the gates' overall figures count."""

_LABELS = {flag: flag.replace("_", " ") for flag in QUALITY_FLAGS}
_REPLY_CHECKS = frozenset(QUALITY_FLAGS)
_CRITIQUE_CHECKS = frozenset({"degenerate", "echo", "too_short", "role_header"})
_HELPFUL_CHECKS = frozenset({"truncated", "degenerate", "too_short", "role_header"})


@dataclass
class QualityGateConfig:
    """Thresholds of the SL-CAI quality gates (the recipe's ``sl_quality`` section holds the same keys).

    The defaults were chosen on two sets: the degenerate, echoing and header-leaking output of a 135M-parameter
    instruct model, which they flag, and the 160 critique→revision samples published with the Constitutional AI
    paper plus ordinary refusals, numbered lists and multi-paragraph answers, which they keep.
    """

    min_words: int = field(
        default=3,
        metadata={
            "help": "A text with fewer words (runs of letters or digits) is flagged `too_short`; 0 flags only "
            "empty texts. 3 keeps 'Call 911 now.' and flags 'Sure.' or 'No, sorry.'."
        },
    )
    ngram_size: int = field(
        default=4,
        metadata={
            "help": "Length in words of the n-grams counted for `degenerate`. Shorter n-grams repeat in normal "
            "prose ('if you are'); four-word ones rarely do."
        },
    )
    max_ngram_repeats: int = field(
        default=4,
        metadata={
            "help": "`degenerate` when one n-gram occurs this many times or more, or when a sentence of three "
            "or more words occurs this many times less one (a third 'I'm here to help.'). Four, not three: a "
            "long answer may legitimately say 'you may want to' three times, but hardly four."
        },
    )
    max_repeated_ngram_share: float = field(
        default=0.3,
        metadata={
            "help": "`degenerate` when more than this share of a text's n-grams repeat an earlier one (1 - "
            "distinct/total; texts with at least 2 x ngram_size words). 'I'm here to help.' x3 scores 0.56; "
            "normal answers stay below 0.05, lists below 0.1."
        },
    )
    echo_shared_words: int = field(
        default=10,
        metadata={
            "help": "`echo` when a reply shares a run of this many consecutive words with a critique or "
            "revision request of the row's principles (for a shorter request: 60% of its words, at least 5). "
            "A critique must share this many and 60% of the request's words: critiques answer their request "
            "in its own words ('The human is deliberately trying to bait the assistant into ...')."
        },
    )
    echo_token_overlap: float = field(
        default=0.8,
        metadata={
            "help": "`echo` when at least this share of the text's distinct content words (stop words left "
            "out, at least 5 of them) appear in one request: a reworded request rather than a reply."
        },
    )
    check_rounds: bool = field(
        default=False,
        metadata={
            "help": "Also check the critiques and revisions of the earlier rounds, not only the training "
            "target, the final revision and the final critique. Stricter: a row whose round-1 critique is "
            "garbage but whose final revision is fine is then left out too."
        },
    )
    exclude_flagged: bool = field(
        default=True,
        metadata={
            "help": "Leave flagged rows out of training (CAISFTTrainer's exclude_flagged_rows, filter_for_training). "
            "False trains on every row and still counts and reports the flags: at your own risk."
        },
    )
    min_kept_share: float = field(
        default=0.5,
        metadata={
            "help": "CAISFTTrainer (and filter_for_training) raise QualityGateError when fewer than this share of "
            "the rows are kept, and the SL-CAI builder warns: the model that wrote the data is then not up to the "
            "task, and training on the rest is not what was asked for. 0 never raises."
        },
    )

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise InputError(f"min_words must be >= 0, got {self.min_words}")
        if self.ngram_size < 1:
            raise InputError(f"ngram_size must be >= 1, got {self.ngram_size}")
        if self.max_ngram_repeats < 2:
            raise InputError(f"max_ngram_repeats must be >= 2, got {self.max_ngram_repeats}")
        if not 0 < self.max_repeated_ngram_share <= 1:
            raise InputError(f"max_repeated_ngram_share must be in (0, 1], got {self.max_repeated_ngram_share}")
        if self.echo_shared_words < 2:
            raise InputError(f"echo_shared_words must be >= 2, got {self.echo_shared_words}")
        if not 0 < self.echo_token_overlap <= 1:
            raise InputError(f"echo_token_overlap must be in (0, 1], got {self.echo_token_overlap}")
        if not 0 <= self.min_kept_share <= 1:
            raise InputError(f"min_kept_share must be in [0, 1], got {self.min_kept_share}")


class QualityGateError(HFCAIError, RuntimeError):
    """Too few SL-CAI rows passed the quality gates to train on them (see :func:`filter_for_training`)."""

    def __init__(self, message: str, result: QualityGateResult | None = None):
        super().__init__(message)
        self.result = result


# ------------------------------------------------------------------------------------------------ text checks
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_CHAR_RUN = re.compile(r"([^\W\d_])\1{7,}|([!?,;:])\2{9,}")

_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can can't could did do does doing don't down during each few for from further had has have having he her
    here hers herself him himself his how i i'm if in into is it it's its itself just let's me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
    that's the their theirs them themselves then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you you're your yours yourself yourselves""".split()
)

# Markers of the critique→revision prompt itself; in any checked text (replies and critiques).
_REQUEST_MARKERS = re.compile(
    r"critique\s*request|revision\s*request|critiquerequest|revisionrequest|edit\s*request\s*:",
    re.IGNORECASE,
)
# Meta-text of a reply that talks about being a revision instead of being one.
_REPLY_META = re.compile(
    r"""
      (?:^|\n)[ \t]*(?:\*\*)?(?:Critique|Revision|Revised\ (?:response|reply|version)|Rewritten\ (?:response|reply))
          (?:\*\*)?[ \t]*:
    | \b(?:rewrite|revise)\ the\ assistant(?:'s|’s)?\b
    | \bhere(?:'s|’s|\ is|\ are)\ (?:the|my|a|an)\ (?:revised|rewritten|new|updated|improved|edited)\ (?:response|reply|version)\b
    | \bas\ an\ ai(?:\ language\ model)?,?\ i\ (?:have|'ve|’ve)\ (?:rewritten|revised)\b
    | \bi\ (?:have|'ve|’ve)\ (?:rewritten|revised)\ (?:the|my|your)\ (?:previous\ |last\ |original\ )?
          (?:response|reply|answer)\b
    | \boutput\ only\ the\ rewritten\ reply\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Chat-template tokens anywhere: <|im_start|>, <|eot_id|>, <|assistant|>, [INST], <start_of_turn>, <<SYS>> ...
_TEMPLATE_TOKEN = re.compile(
    r"<\|[A-Za-z_]+\|>|\[/?INST\]|<<\s*/?SYS\s*>>|</?(?:start|end)_of_turn>|<\|(?:begin|end)_of_text\|>",
)
# Role headers a chat template leaves when its special tokens are decoded away: the text opens with a bare role line
# ("assistant\n", "Assistant:\n"), a line inside is exactly a lower-case template role ("\nassistant\n"), or a line
# opens with a transcript role ("Human: ...", "### Assistant:"). Ordinary prose says "the assistant" mid-sentence, not
# "Assistant:" opening a line.
_ROLE_LINE = re.compile(
    r"""\A\s*(?i:assistant|user|system|model|human)[ \t]*:?[ \t]*(?:\n|\Z)
      | (?:^|\n)[ \t]*(?:assistant|user|system)[ \t]*(?:\n|\Z)
      | (?:^|\n)[ \t]*(?:\#{1,4}[ \t]*)?(?:Human|Assistant|User|System|HUMAN|ASSISTANT|USER|SYSTEM)[ \t]*:""",
    re.VERBOSE,
)


def _words(text: str) -> list[str]:
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


@functools.lru_cache(maxsize=1024)
def _request_words(request: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The words and content words of a critique or revision request: the same few requests are compared with
    every checked text of every row, so they are split once."""
    words = tuple(_words(request))
    return words, frozenset(w for w in words if w not in _STOP_WORDS)


def _is_too_short(text: str, config: QualityGateConfig) -> bool:
    return not text.strip() or len(_words(text)) < config.min_words


def _is_degenerate(text: str, config: QualityGateConfig) -> bool:
    if _CHAR_RUN.search(text):
        return True
    words = _words(text)
    run = 1
    for previous, word in zip(words, words[1:]):
        run = run + 1 if word == previous else 1
        if run >= 5:  # "help help help help help"
            return True
    n = config.ngram_size
    if len(words) >= n:
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        if counts.most_common(1)[0][1] >= config.max_ngram_repeats:
            return True
        if len(words) >= 2 * n and 1 - len(counts) / len(grams) > config.max_repeated_ngram_share:
            return True
    sentences = [" ".join(_words(s)) for s in _SENTENCE_SPLIT.split(text)]
    sentences = [s for s in sentences if len(s.split()) >= 3]
    if sentences and Counter(sentences).most_common(1)[0][1] >= max(2, config.max_ngram_repeats - 1):
        return True
    # The same sentence twice in a row ("I'm here to help. I'm here to help.") is never prose.
    return any(a == b for a, b in zip(sentences, sentences[1:]))


def _has_role_header(text: str) -> bool:
    return bool(_TEMPLATE_TOKEN.search(text) or _ROLE_LINE.search(text))


def _echoes(text: str, requests: Sequence[str], config: QualityGateConfig, *, reply: bool) -> bool:
    if _REQUEST_MARKERS.search(text) or (reply and _REPLY_META.search(text)):
        return True
    words = _words(text)
    if not words:
        return False
    content = {w for w in words if w not in _STOP_WORDS}
    for request in requests:
        request_words, request_content = _request_words(request)
        if not request_words:
            continue
        share = math.ceil(0.6 * len(request_words))
        # A reply has no business quoting ten words of a request; a critique answers "Discuss whether the human is
        # trying to bait the assistant" with "The human is trying to bait the assistant", so it must repeat most of
        # the request to count as an echo.
        needed = min(config.echo_shared_words, max(5, share)) if reply else max(config.echo_shared_words, share)
        if len(words) >= needed and len(request_words) >= needed:
            match = difflib.SequenceMatcher(None, words, request_words, autojunk=False).find_longest_match(
                0, len(words), 0, len(request_words)
            )
            if match.size >= needed:
                return True
        if len(content) >= 5:
            if len(content & request_content) / len(content) >= config.echo_token_overlap:
                return True
    return False


def _text_flags(
    text: str | None,
    checks: frozenset[str],
    requests: Sequence[str],
    config: QualityGateConfig,
    *,
    finish_reason: str | None = None,
    reply: bool = True,
) -> set[str]:
    text = text or ""
    flags = set()
    if "truncated" in checks and finish_reason == "length":
        flags.add("truncated")
    if "too_short" in checks and _is_too_short(text, config):
        flags.add("too_short")
    if not text.strip():
        return flags
    if "degenerate" in checks and _is_degenerate(text, config):
        flags.add("degenerate")
    if "echo" in checks and _echoes(text, requests, config, reply=reply):
        flags.add("echo")
    if "role_header" in checks and _has_role_header(text):
        flags.add("role_header")
    return flags


# ------------------------------------------------------------------------------------------------ rows
RequestSource = Any
"""A :class:`~hf_cai.constitution.Constitution`, a mapping ``{principle_id: request text or texts}``, a sequence of
request texts that apply to every row, or ``None`` (only the meta-text markers are checked for ``echo``)."""


def _request_table(source: RequestSource) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """``({principle_id: requests}, every request)`` from any :data:`RequestSource`."""
    if source is None:
        return {}, ()
    if hasattr(source, "principles"):  # a Constitution (not imported here: its module is being reorganised)
        table = {
            p.id: tuple(t for t in (getattr(p, "critique", None), getattr(p, "revision", None)) if t)
            for p in source.principles
        }
    elif isinstance(source, Mapping):
        table = {str(k): ((v,) if isinstance(v, str) else tuple(v)) for k, v in source.items()}
    elif isinstance(source, str):
        return {}, (source,)
    else:
        return {}, tuple(source)
    every = tuple(dict.fromkeys(t for texts in table.values() for t in texts))
    return table, every


def _row_requests(row: Mapping[str, Any], table: dict[str, tuple[str, ...]], every: tuple[str, ...]) -> tuple[str, ...]:
    ids = [r.get("principle_id") for r in row.get("revisions") or []]
    if not table or not ids or any(i not in table for i in ids):
        return every  # unknown principle: check against all of them
    return tuple(dict.fromkeys(t for i in ids for t in table[i]))


def _last_content(messages: Any) -> str | None:
    if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
        return messages[-1].get("content")
    return None


def _target(row: Mapping[str, Any]) -> tuple[str, str | None]:
    """The training target and its finish reason: the last non-empty revision, else the first reply (the builder
    keeps the previous reply when a revision comes back empty)."""
    revisions = row.get("revisions") or []
    text = _last_content(row.get("completion"))
    for revision in reversed(revisions):
        if (revision.get("revision") or "").strip():
            return (revision["revision"] if text is None else text), revision.get("revision_finish_reason")
    initial = row.get("initial_response")
    return (initial if text is None else text) or "", row.get("initial_finish_reason")


def _row_findings(
    row: Mapping[str, Any], requests: Sequence[str], config: QualityGateConfig
) -> list[tuple[str, str, str]]:
    """``[(flag, where, text)]`` for one row, each flag once, in :data:`QUALITY_FLAGS` order."""
    found: dict[str, tuple[str, str]] = {}

    def check(text: str | None, where: str, checks: frozenset[str], **kwargs: Any) -> None:
        for flag in _text_flags(text, checks, requests, config, **kwargs):
            found.setdefault(flag, (where, text or ""))

    target, reason = _target(row)
    revisions = row.get("revisions") or []
    if row.get("kind") == "helpful" or not revisions:
        check(target, "reply", _HELPFUL_CHECKS if row.get("kind") == "helpful" else _REPLY_CHECKS, finish_reason=reason)
    else:
        check(target, "training target", _REPLY_CHECKS, finish_reason=reason)
        last = len(revisions) - 1
        for index, revision in enumerate(revisions):
            if index != last and not config.check_rounds:
                continue
            name = f"round {revision.get('round', index + 1)}"
            check(revision.get("critique"), f"{name} critique", _CRITIQUE_CHECKS, reply=False)
            check(
                revision.get("revision"),
                f"{name} revision",
                _REPLY_CHECKS,
                finish_reason=revision.get("revision_finish_reason"),
            )
    return [(flag, *found[flag]) for flag in QUALITY_FLAGS if flag in found]


def flag_sl_row(
    row: Mapping[str, Any], constitution_or_requests: RequestSource = None, config: QualityGateConfig | None = None
) -> list[str]:
    """The quality flags of one SL-CAI row, ordered as :data:`QUALITY_FLAGS` (empty: the row is fine).

    Args:
        row: A row of the SL-CAI schema (:func:`~hf_cai.builders.critique_revision.sl_record`).
        constitution_or_requests: The constitution the row was built with, or the request texts (see
            :data:`RequestSource`); ``echo`` compares the texts with the critique and revision requests of the
            principles the row used (all of them when a principle is unknown).
        config: Thresholds; the defaults of :class:`QualityGateConfig` when ``None``.
    """
    config = config or QualityGateConfig()
    table, every = _request_table(constitution_or_requests)
    return [flag for flag, _, _ in _row_findings(row, _row_requests(row, table, every), config)]



def flag_reply(
    text: str, constitution_or_requests: RequestSource = None, config: QualityGateConfig | None = None
) -> list[str]:
    """The flags of one model reply outside a row (e.g. an evaluation reply): ``degenerate``, ``echo`` (of any of the
    constitution's critique or revision requests, or meta-text), ``too_short`` and ``role_header``, ordered as
    :data:`QUALITY_FLAGS`. A model trained on botched revisions answers with such text."""
    config = config or QualityGateConfig()
    _, every = _request_table(constitution_or_requests)
    found = _text_flags(text, _CRITIQUE_CHECKS, every, config, reply=True)
    return [flag for flag in QUALITY_FLAGS if flag in found]

# ------------------------------------------------------------------------------------------------ datasets
@dataclass
class QualityGateResult:
    """Flags of every row of one SL-CAI dataset, as :func:`gate_sl_dataset` found them.

    Attributes:
        flags: Per row (in dataset order), its flags ordered as :data:`QUALITY_FLAGS`.
        config: The thresholds used.
        examples: Per flag, ``(where, text)`` of the first row flagged for it, e.g.
            ``("training target", "I'm here to help. I'm here ...")``.
    """

    flags: list[list[str]]
    config: QualityGateConfig
    examples: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.flags)

    @property
    def flagged(self) -> int:
        """Rows with at least one flag."""
        return sum(1 for f in self.flags if f)

    @property
    def kept(self) -> int:
        """Rows that go on to training: the unflagged ones, or all of them when ``exclude_flagged`` is off."""
        return self.total - self.flagged if self.config.exclude_flagged else self.total

    @property
    def kept_share(self) -> float:
        return self.kept / self.total if self.total else 1.0

    @property
    def kept_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.flags) if not f or not self.config.exclude_flagged]

    @property
    def reason_counts(self) -> dict[str, int]:
        """Flagged rows per reason, every reason of :data:`QUALITY_FLAGS` (a row with two flags counts twice)."""
        counts = Counter(flag for row in self.flags for flag in row)
        return {flag: counts.get(flag, 0) for flag in QUALITY_FLAGS}

    @property
    def counts(self) -> dict[str, int]:
        """:attr:`reason_counts` plus ``flagged`` (rows with any flag), ``kept`` and ``total``."""
        return {**self.reason_counts, "flagged": self.flagged, "kept": self.kept, "total": self.total}

    def most_common_reason(self) -> str | None:
        reasons = {k: v for k, v in self.reason_counts.items() if v}
        return max(reasons, key=lambda k: (reasons[k], -QUALITY_FLAGS.index(k))) if reasons else None

    def _reasons_text(self) -> str:
        reasons = sorted(
            ((k, v) for k, v in self.reason_counts.items() if v), key=lambda kv: (-kv[1], QUALITY_FLAGS.index(kv[0]))
        )
        return ", ".join(f"{_LABELS[k]} {v}" for k, v in reasons)

    def _example_text(self, flag: str) -> str:
        where, text = self.examples[flag]
        short = " ".join(text.split())  # one line: leaked newlines would break the summary
        short = short[:80] + ("…" if len(short) > 80 else "")
        return f'{_LABELS[flag]} ({where}): "{short}"' if short else f"{_LABELS[flag]} ({where}): empty"

    def summary_lines(self) -> list[str]:
        """Two to four lines for the run summary and the dataset card."""
        percent = f"{self.kept_share:.0%}"
        head = f"SL-CAI quality gates: {self.kept} of {self.total} rows kept ({percent})"
        if not self.flagged:
            return [head + "; no row flagged", "checked for: " + ", ".join(_LABELS[f] for f in QUALITY_FLAGS)]
        if self.config.exclude_flagged:
            lines = [f"{head}; left out: {self._reasons_text()}"]
        else:
            lines = [f"{head}; flagged but trained on (exclude_flagged: false): {self._reasons_text()}"]
        rows = "row" if self.flagged == 1 else "rows"
        lines.append(f"{self.flagged} {rows} flagged in all (a row can have several reasons)")
        reason = self.most_common_reason()
        if reason in self.examples:
            lines.append("e.g. " + self._example_text(reason))
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable record that goes under the manifest's ``quality`` key."""
        return {
            "counts": self.counts,
            "kept_share": round(self.kept_share, 4),
            "exclude_flagged": self.config.exclude_flagged,
            "min_kept_share": self.config.min_kept_share,
            "config": asdict(self.config),
            "examples": {
                flag: {"where": where, "text": " ".join(text.split())[:200]}
                for flag, (where, text) in self.examples.items()
            },
            "summary": self.summary_lines(),
        }

    def raise_if_too_few(self) -> None:
        """Raise :class:`QualityGateError` when fewer than ``min_kept_share`` of the rows are kept."""
        if self.kept_share >= self.config.min_kept_share:
            return
        reason = self.most_common_reason()
        advice = []
        if self.reason_counts["truncated"]:
            advice.append(
                "raise `max_new_tokens` when generating (CritiqueRevisionConfig; the recipe's `sl_data` section): "
                "truncated rows ran out of tokens"
            )
        advice.append("generate the SL data with a larger or stronger instruct model")
        message = (
            f"SL-CAI quality gates kept only {self.kept} of {self.total} rows ({self.kept_share:.0%}), less than "
            f"min_kept_share {self.config.min_kept_share:.0%}. Left out: {self._reasons_text()}"
            f" ({self.flagged} rows flagged; a row can have several reasons)."
        )
        if reason in self.examples:
            message += f" Most common: {self._example_text(reason)}."
        message += (
            " To fix: " + "; or ".join(advice) + ". At your own risk: lower `min_kept_share`, or train on the flagged "
            "rows too (`exclude_flagged_rows=False` in CAISFTConfig; `exclude_flagged: false` in the recipe's "
            "`sl_quality` section)."
        )
        raise QualityGateError(message, self)


def _rows(dataset_or_rows: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(dataset_or_rows, Mapping):
        raise TypeError(
            "gate_sl_dataset takes one split (a datasets.Dataset or a list of rows), not a DatasetDict or a row; "
            "gate e.g. dataset['train_sft']"
        )
    return dataset_or_rows


def gate_sl_dataset(
    dataset_or_rows: Any, constitution: Constitution | RequestSource = None, config: QualityGateConfig | None = None
) -> QualityGateResult:
    """Flag every row of an SL-CAI split (a ``datasets.Dataset`` or a list of row dicts). Raises nothing: record
    ``result.to_dict()`` first, then :func:`filter_for_training` enforces ``min_kept_share``."""
    config = config or QualityGateConfig()
    table, every = _request_table(constitution)
    flags: list[list[str]] = []
    examples: dict[str, tuple[str, str]] = {}
    for row in _rows(dataset_or_rows):
        findings = _row_findings(row, _row_requests(row, table, every), config)
        for flag, where, text in findings:
            examples.setdefault(flag, (where, text))
        flags.append([flag for flag, _, _ in findings])
    return QualityGateResult(flags=flags, config=config, examples=examples)


def filter_for_training(dataset: Any, result: QualityGateResult) -> Any:
    """``dataset`` without its flagged rows (unchanged when ``exclude_flagged`` is off), of the same type.

    Raises:
        QualityGateError: fewer than ``min_kept_share`` of the rows are kept.
        ValueError: ``result`` was computed on a dataset of another length.
    """
    if len(dataset) != result.total:
        raise InputError(f"the quality result covers {result.total} rows but the dataset has {len(dataset)}")
    result.raise_if_too_few()
    if not result.config.exclude_flagged or not result.flagged:
        return dataset
    keep = result.kept_indices
    if hasattr(dataset, "select"):
        return dataset.select(keep)
    return [dataset[i] for i in keep]


@dataclass
class SLQualityReport:
    """The quality gates' findings on every split of an SL-CAI dataset: what
    :meth:`~hf_cai.builders.CritiqueRevisionBuilder.build` attaches to its result as ``quality`` and writes to
    :data:`QUALITY_FILE`.

    Attributes:
        splits: ``{split: QualityGateResult}`` for every split, in the dataset's order.
        config: The thresholds used.
    """

    splits: dict[str, QualityGateResult]
    config: QualityGateConfig

    @property
    def sft(self) -> QualityGateResult:
        """The SFT splits (``train_sft`` and ``test_sft``) together: the rows the summary counts."""
        results = [self.splits[name] for name in SFT_SPLITS if name in self.splits]
        examples: dict[str, tuple[str, str]] = {}
        for result in reversed(results):  # the training split's examples first
            examples.update(result.examples)
        return QualityGateResult(
            flags=[flags for result in results for flags in result.flags], config=self.config, examples=examples
        )

    def summary_lines(self) -> list[str]:
        """:meth:`QualityGateResult.summary_lines` of the SFT splits together."""
        return self.sft.summary_lines()

    def split_counts(self) -> str:
        """``train_sft 3 of 9 kept (6 flagged), test_sft 1 of 1 kept (0 flagged), ...``: one line for a log."""
        return ", ".join(f"{name} {r.kept} of {r.total} kept ({r.flagged} flagged)" for name, r in self.splits.items())

    def to_dict(self) -> dict[str, Any]:
        """:data:`QUALITY_FILE`'s content: the SFT splits' :meth:`QualityGateResult.to_dict`, and under ``"splits"``
        the same per split."""
        return {**self.sft.to_dict(), "splits": {name: result.to_dict() for name, result in self.splits.items()}}

    def __str__(self) -> str:
        return "\n".join([*self.summary_lines(), "per split: " + self.split_counts()])


def gate_sl_splits(
    dataset: Mapping[str, Any], constitution: Constitution | RequestSource = None, config: QualityGateConfig | None = None
) -> SLQualityReport:
    """:func:`gate_sl_dataset` on every split of an SL-CAI ``DatasetDict`` (or ``{split: rows}``)."""
    config = config or QualityGateConfig()
    return SLQualityReport(
        splits={name: gate_sl_dataset(split, constitution, config) for name, split in dataset.items()}, config=config
    )


def with_quality_flags(dataset: Mapping[str, Any], report: SLQualityReport):
    """A ``DatasetDict`` of ``dataset``'s splits, each with the :data:`QUALITY_COLUMN` of ``report`` (a column of
    lists of strings, also when every list is empty); a column of that name already there is replaced.

    Each split's fingerprint is derived from its previous one and the flags, so the same rows and flags always save
    to the same bytes (a rerun keeps the output hash a pipeline recorded).
    """
    from datasets import DatasetDict, Value

    flagged = {}
    for name, split in dataset.items():
        flags = report.splits[name].flags
        fingerprint = hashlib.sha256(f"{split._fingerprint}\0{json.dumps(flags)}".encode()).hexdigest()[:16]
        if QUALITY_COLUMN in split.column_names:
            split = split.remove_columns(QUALITY_COLUMN)
        flagged[name] = split.add_column(QUALITY_COLUMN, flags, feature=[Value("string")], new_fingerprint=fingerprint)
    return DatasetDict(flagged)
