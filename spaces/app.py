"""Chat with a base model and its Constitutional-AI version side by side (a Gradio app for Hugging Face Spaces).

One prompt goes to both models and the two replies stream at the same time. A visitor can ask either model to
critique (and revise) its last reply under a principle of the constitution, which is the step SL-CAI training learns
from, and can read the constitution itself. Configuration comes from ``space_config.json`` next to this file and
``HF_CAI_*`` environment variables (see :class:`hf_cai.hub.space_config.SpaceConfig`).

The same file runs as a Space (``python app.py``), from ``hf-cai chat``, and from tests via :func:`create_app`.
API endpoints for ``gradio_client``: ``/chat``, ``/retry``, ``/clear``, ``/critique``.
"""

from __future__ import annotations

# On ZeroGPU hardware the `spaces` package must be imported before torch initialises CUDA. Elsewhere the import may
# fail, or find an unrelated module of that name (this repository's own `spaces/` folder), hence the attribute check.
try:
    import spaces as _hf_spaces
except ImportError:
    _hf_spaces = None

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import gradio as gr

from hf_cai.constitution import Constitution, ConstitutionError
from hf_cai.conversation import Conversation
from hf_cai.hub.space_config import CONFIG_FILE_NAME, SpaceConfig, load_space_config
from hf_cai.spaces.about import describe_models, local_files
from hf_cai.spaces.batching import TRIMMED_MESSAGE, TRIMMED_TURNS
from hf_cai.spaces.models import SideBySideModels
from hf_cai.spaces.principles import (
    constitution_footer,
    constitution_header,
    instructions_markdown,
    principle_choices,
    principles_markdown,
)

logger = logging.getLogger("hf_cai.spaces.app")

EMPTY_PROMPT_NOTICE = "Type a prompt first: an empty message is not sent to the models."
NOTHING_TO_RETRY_NOTICE = "Nothing to retry yet: send a prompt first."
NOTHING_TO_CRITIQUE_NOTICE = "Nothing to critique yet: send a prompt first."
TRIMMED_NOTICES = {
    TRIMMED_TURNS: "The conversation is longer than the models read at once: its earliest turns were left out.",
    TRIMMED_MESSAGE: "Your message is longer than the models read at once: they read only its end.",
}
RANDOM_SEED = -1
"""The seed setting that draws a new seed for every reply (the default)."""
SEED_LIMIT = 2**53
"""Seeds run from 0 to this (the largest integer a browser's numbers hold exactly)."""
PENDING_REPLY = "…"
EMPTY_REPLY = "_(empty reply: the model ended its turn at once)_"
PANEL_NAMES = {"CAI": "cai", "base": "base"}


def _on_zero_gpu() -> bool:
    return callable(getattr(_hf_spaces, "GPU", None))


def _on_gpu(function: Callable) -> Callable:
    """``spaces.GPU(function)`` on ZeroGPU hardware; ``function`` unchanged everywhere else."""
    return _hf_spaces.GPU(function) if _on_zero_gpu() else function


# Control characters (C0 and C1) other than tab and newline, and lone surrogates, which no text encoding carries.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_message(text: str) -> tuple[str, int]:
    """``text`` with Windows/old-Mac line ends made newlines, without control characters (but tabs and newlines)
    and lone surrogates, and stripped; and how many characters were removed. Emoji and other text stay unchanged."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cleaned, removed = _UNPRINTABLE.subn("", text)
    return cleaned.strip(), removed


def red_team_examples(limit: int) -> list[str]:
    """Up to ``limit`` prompts of the built-in red-team set, one per category before any category repeats."""
    lines = (resources.files("hf_cai") / "prompts" / "red_team.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    seen: set[str] = set()
    firsts = [r["prompt"] for r in rows if not (r["category"] in seen or seen.add(r["category"]))]
    rest = [r["prompt"] for r in rows if r["prompt"] not in firsts]
    return (firsts + rest)[:limit]


def resolve_constitution(config: SpaceConfig) -> tuple[Constitution, str | None]:
    """The constitution to show and critique with, and a note when it had to fall back to the built-in one."""
    if config.constitution:
        return Constitution.resolve(config.constitution), None
    beside_model = Path(config.cai_model or "") / "constitution.yaml"
    if config.cai_model and beside_model.is_file():
        return Constitution.load(beside_model), None
    note = "No constitution was configured or found beside the CAI model; showing the built-in 'harmless' one."
    logger.warning(note)
    return Constitution.builtin("harmless"), note


def _text(content: Any) -> str:
    """Plain text of a chat message's content (a string, or Gradio's list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _plain(history: Sequence[dict] | None) -> Conversation:
    return [{"role": m["role"], "content": _text(m["content"])} for m in history or []]


def _shown(history: Conversation, empty_reply: str = EMPTY_REPLY) -> Conversation:
    """The history as displayed: a reply without text shows ``empty_reply`` (an ellipsis while it streams)."""
    return [
        {"role": m["role"], "content": m["content"] or empty_reply} if m["role"] == "assistant" else m
        for m in history
    ]


class SideBySideChat:
    """The event handlers of the Space (independent of the page layout).

    Histories are kept per browser session in ``gr.State`` as plain ``{"role", "content"}`` messages.
    """

    def __init__(
        self,
        config: SpaceConfig,
        models: SideBySideModels,
        constitution: Constitution,
        *,
        names: dict[str, str | None] | None = None,
    ):
        self.config = config
        self.models = models
        self.constitution = constitution
        self.names = names or {"base": models.base_label, "cai": models.cai_label}
        self._stream = _on_gpu(models.stream)
        self._generate = _on_gpu(models.generate)
        # On ZeroGPU the GPU exists only inside a decorated call, so each event decodes its replies there, alone.
        self._shared_batches = not _on_zero_gpu()

    @property
    def unavailable_notice(self) -> str:
        return f"⚠️ {self.models.load_error}" if self.models.load_error else ""

    def _settings(self, max_new_tokens: float, temperature: float, seed: float | None) -> dict[str, Any]:
        tokens = int(min(max(int(max_new_tokens or 1), 1), self.config.max_new_tokens_limit))
        return {
            "max_new_tokens": tokens,
            "temperature": float(min(max(float(temperature or 0.0), 0.0), 2.0)),
            "seed": None if seed is None or seed < 0 else int(min(int(seed), SEED_LIMIT)),
            "shared_batches": self._shared_batches,
        }

    def _answer(
        self,
        message: str,
        base: Conversation,
        cai: Conversation,
        max_new_tokens: float,
        temperature: float,
        seed: float | None,
        notes: Sequence[str] = (),
    ) -> Iterator[tuple]:
        settings = self._settings(max_new_tokens, temperature, seed)
        histories = {"base": base, "cai": cai}
        for panel in self.models.panels:
            histories[panel] = [*histories[panel], {"role": "user", "content": message}]
        conversations = {panel: list(histories[panel]) for panel in self.models.panels}
        for panel in self.models.panels:
            histories[panel].append({"role": "assistant", "content": ""})
        notices = [self.unavailable_notice, *notes]

        def frame(empty_reply: str) -> tuple:
            shown = [_shown(histories[panel], empty_reply) for panel in ("base", "cai")]
            return *shown, " ".join(n for n in notices if n), histories["base"], histories["cai"]

        yield frame(PENDING_REPLY)
        # Every update sent costs the server CPU time (the chat's conversion and transfer), so the replies are sent
        # at most every stream_interval_ms, but the first words at once.
        interval, sent, started = self.config.stream_interval_ms / 1000, 0.0, False
        for replies in self._stream(conversations, **settings):
            for panel, reply in replies.items():
                histories[panel][-1] = {"role": "assistant", "content": reply}
            for kind in dict.fromkeys(replies.trimmed.values()):
                if TRIMMED_NOTICES[kind] not in notices:
                    notices.append(TRIMMED_NOTICES[kind])
            if (not started and any(replies.values())) or time.monotonic() - sent >= interval:
                started, sent = started or any(replies.values()), time.monotonic()
                yield frame(PENDING_REPLY)
        yield frame(EMPTY_REPLY)

    def chat(
        self,
        message: str,
        max_new_tokens: float,
        temperature: float,
        seed: float | None,
        base: Conversation | None,
        cai: Conversation | None,
    ) -> Iterator[tuple]:
        """Send ``message`` to both models; yields (base chat, CAI chat, notice, prompt box, base state, CAI state).

        Control characters are removed from the message first (and the visitor told); an empty message or one over
        ``max_prompt_chars`` is not sent, with a notice saying why.
        """
        base, cai = _plain(base), _plain(cai)
        text, removed = clean_message(message or "")
        if not text:
            yield _shown(base), _shown(cai), EMPTY_PROMPT_NOTICE, message, base, cai
            return
        if len(text) > self.config.max_prompt_chars:
            notice = (
                f"Your prompt has {len(text)} characters; the limit is {self.config.max_prompt_chars}. "
                "Shorten it and send it again (nothing was sent to the models)."
            )
            yield _shown(base), _shown(cai), notice, message, base, cai
            return
        notes = [f"Removed {removed} control character{'s' * (removed != 1)} from your message."] if removed else []
        answers = self._answer(text, base, cai, max_new_tokens, temperature, seed, notes)
        for shown_base, shown_cai, notice, new_base, new_cai in answers:
            yield shown_base, shown_cai, notice, "", new_base, new_cai

    def retry(
        self,
        max_new_tokens: float,
        temperature: float,
        seed: float | None,
        base: Conversation | None,
        cai: Conversation | None,
    ) -> Iterator[tuple]:
        """Generate the last replies again; yields (base chat, CAI chat, notice, base state, CAI state)."""
        base, cai = _plain(base), _plain(cai)
        last_user = next((m["content"] for m in reversed(base) if m["role"] == "user"), None)
        if last_user is None:
            yield _shown(base), _shown(cai), NOTHING_TO_RETRY_NOTICE, base, cai
            return
        base = base[: max(i for i, m in enumerate(base) if m["role"] == "user")]
        if any(m["role"] == "user" for m in cai):
            cai = cai[: max(i for i, m in enumerate(cai) if m["role"] == "user")]
        yield from self._answer(last_user, base, cai, max_new_tokens, temperature, seed)

    def clear(self) -> tuple:
        """Forget both conversations; returns (base chat, CAI chat, notice, critique, revision, critique notice,
        base state, CAI state)."""
        return [], [], "", "", "", "", [], []

    def critique(
        self,
        which: str,
        principle_id: str,
        revise: bool,
        max_new_tokens: float,
        temperature: float,
        seed: float | None,
        base: Conversation | None,
        cai: Conversation | None,
    ) -> tuple[str, str, str]:
        """Ask the model that wrote the last ``which`` ("CAI" or "base") reply to critique it under a principle.

        Returns (critique, revision — empty unless ``revise``, notice).
        """
        panel = PANEL_NAMES.get(which)
        if panel is None:
            return "", "", f"Unknown panel {which!r}: choose one of {', '.join(PANEL_NAMES)}."
        if panel not in self.models.panels:
            return "", "", self.unavailable_notice
        history = _plain(base if panel == "base" else cai)
        if not history or history[-1]["role"] != "assistant" or len(history) < 2:
            return "", "", NOTHING_TO_CRITIQUE_NOTICE
        exchange = history[-2:]
        settings = self._settings(max_new_tokens, temperature, seed)
        few_shot = self.config.critique_few_shot
        try:
            request = self.constitution.critique_messages(exchange, principle_id, few_shot=few_shot)
        except ConstitutionError as error:
            return "", "", f"Cannot critique: {error}"
        critique = self._generate(panel, request, **settings)
        revision = ""
        if revise:
            request = self.constitution.revision_messages(exchange, principle_id, critique, few_shot=few_shot)
            revision = self._generate(panel, request, **settings)
        name = self.names[panel]
        return critique, revision, f"Critique by the {which} model ({name}) under principle '{principle_id}'."


CONTENT_NOTE = (
    "**Content note:** these red-team prompts ask for harmful things (self-harm, weapons, hate, scams, ...). They are "
    "here to show how each model answers or refuses such requests; some may be upsetting."
)


def create_app(config: SpaceConfig, *, models: SideBySideModels | None = None) -> gr.Blocks:
    """Load the models (unless given) and build the page, with its queue configured."""
    models = models or SideBySideModels.from_config(config)
    constitution, note = resolve_constitution(config)
    about = describe_models(config, constitution, cai_is_adapter=models.shares_base)
    if local_files(about):
        gr.set_static_paths(local_files(about))  # exactly the files linked, nothing else of their folders
    names = {"base": about["base"].name, "cai": about["cai"].name if "cai" in about else None}
    handlers = SideBySideChat(config, models, constitution, names=names)
    choices = principle_choices(constitution)
    cai_placeholder = handlers.unavailable_notice or None
    text = {"latex_delimiters": [], "sanitize_html": True}

    with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {config.title}\n"
            "The same prompt goes to the base model (left) and to the model trained with Constitutional AI "
            "(right). Critique a reply to see the self-critique the training learned from."
        )
        gr.Markdown(handlers.unavailable_notice, visible=bool(models.load_error), elem_id="load-status")
        base_state = gr.State([])
        cai_state = gr.State([])
        with gr.Row(equal_height=True):
            with gr.Column():
                gr.Markdown(about["base"].markdown("Base model"), elem_id="base-about", **text)
                base_chat = gr.Chatbot(
                    label=names["base"], elem_id="base-chat", height=380, buttons=["copy", "copy_all"]
                )
            with gr.Column():
                cai_about = about["cai"].markdown("CAI model") if "cai" in about else None
                gr.Markdown(cai_about or "**CAI model** — none configured", elem_id="cai-about", **text)
                cai_chat = gr.Chatbot(
                    label=names["cai"] or "CAI model: none configured",
                    elem_id="cai-chat",
                    height=380,
                    buttons=["copy", "copy_all"],
                    placeholder=cai_placeholder,
                )
        with gr.Row(equal_height=True):
            # lines=1 with max_lines > 1: Enter sends, Shift+Enter starts a new line (the box grows to max_lines).
            prompt = gr.Textbox(
                placeholder="Ask both models… (Enter sends, Shift+Enter for a new line)",
                label="prompt",
                show_label=False,
                lines=1,
                max_lines=8,
                scale=8,
                elem_id="prompt",
                autofocus=True,
            )
            send = gr.Button("Send", variant="primary", scale=1, min_width=100, elem_id="send")
        notice = gr.Markdown(label="notice", elem_id="notice")
        with gr.Row(elem_id="chat-actions"):
            retry = gr.Button("Retry", size="sm", scale=0, min_width=90, elem_id="retry")
            clear = gr.Button("Clear", size="sm", scale=0, min_width=90, elem_id="clear")
        with gr.Accordion("Generation settings", open=False):
            max_new_tokens = gr.Slider(
                1, config.max_new_tokens_limit, value=config.max_new_tokens, step=1, label="Max new tokens"
            )
            temperature = gr.Slider(0.0, 2.0, value=config.temperature, step=0.05, label="Temperature (0 = greedy)")
            seed = gr.Number(RANDOM_SEED, label=f"Seed ({RANDOM_SEED}: a new one each time)", precision=0,
                             minimum=RANDOM_SEED, maximum=SEED_LIMIT, elem_id="seed")
        gr.Markdown(CONTENT_NOTE, elem_id="content-note")
        gr.Examples(
            examples=[[p] for p in red_team_examples(config.num_examples)],
            inputs=[prompt],
            label="Red-team prompts (built-in set)",
            cache_examples=False,
        )
        with gr.Accordion("Critique the last reply", open=False, elem_id="critique-panel"):
            with gr.Row():
                which = gr.Radio(list(PANEL_NAMES), value="CAI", label="Reply of", scale=1)
                principle = gr.Dropdown(
                    choices, value=choices[0][1] if choices else None, label="Principle", scale=3, elem_id="principle"
                )
                revise = gr.Checkbox(value=True, label="Also revise", scale=1)
            critique_button = gr.Button("Critique", elem_id="critique", interactive=bool(choices))
            critique_notice = gr.Markdown(elem_id="critique-notice")
            critique_text = gr.Textbox(label="Critique", lines=4, interactive=False, elem_id="critique-text")
            revision_text = gr.Textbox(label="Revision", lines=4, interactive=False, elem_id="revision-text")
        with gr.Accordion(
            f"Constitution: {constitution.name} v{constitution.version}", open=False, elem_id="constitution"
        ):
            gr.Markdown(constitution_header(constitution, note), **text)
            gr.Markdown(principles_markdown(constitution), elem_id="principles", **text)
            with gr.Accordion("Revision requests and preference questions", open=False):
                gr.Markdown(instructions_markdown(constitution), elem_id="instructions", **text)
            gr.Markdown(constitution_footer(constitution), **text)

        model_event = {"concurrency_id": "models", "concurrency_limit": config.concurrency_limit}
        settings = [max_new_tokens, temperature, seed, base_state, cai_state]
        gr.on(
            [send.click, prompt.submit],
            handlers.chat,
            inputs=[prompt, *settings],
            outputs=[base_chat, cai_chat, notice, prompt, base_state, cai_state],
            api_name="chat",
            **model_event,
        )
        retry.click(
            handlers.retry,
            inputs=settings,
            outputs=[base_chat, cai_chat, notice, base_state, cai_state],
            api_name="retry",
            **model_event,
        )
        clear_outputs = [base_chat, cai_chat, notice, critique_text, revision_text, critique_notice, base_state,
                         cai_state]
        clear.click(handlers.clear, outputs=clear_outputs, api_name="clear", queue=False)
        # The bin icon of either panel clears both conversations, so the panels never disagree with the history.
        gr.on([base_chat.clear, cai_chat.clear], handlers.clear, outputs=clear_outputs, api_visibility="private",
              queue=False)
        critique_button.click(
            handlers.critique,
            inputs=[which, principle, revise, *settings],
            outputs=[critique_text, revision_text, critique_notice],
            api_name="critique",
            **model_event,
        )
    demo.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency_limit)
    return demo


def main() -> None:
    """Entry point of the Space: read ``space_config.json`` beside this file (if any) and serve."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config_file = Path(__file__).with_name(CONFIG_FILE_NAME)
    config = load_space_config(config_file if config_file.is_file() else None)
    create_app(config).launch()


if __name__ == "__main__":
    main()
