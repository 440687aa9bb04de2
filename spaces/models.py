"""The base model and its CAI version, loaded once and answering side by side.

When the CAI model is a LoRA adapter, one copy of the base is loaded and both panels are decoded in ONE batched
``generate`` call: PEFT's mixed-adapter batches run row 0 with the adapter switched off (``"__base__"``) and row 1
with it on, so the two replies stream at the same pace from one forward pass per token, without toggling global
adapter state between concurrent requests. A merged CAI model is a second model; each model then generates in its
own thread. Either way :meth:`SideBySideModels.stream` yields both partial replies after every decoding step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.backends.chat_tokens import end_of_turn_ids, fit_conversation, render_chat
from hf_cai.conversation import Message
from hf_cai.hub.space_config import SpaceConfig
from hf_cai.modeling import ModelLoadError, is_peft_adapter, load_causal_lm, load_tokenizer

logger = logging.getLogger(__name__)

PANELS = ("base", "cai")
BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed-adapter batch."""

_DONE = object()


@dataclass
class _Engine:
    """What decodes one panel: a model, its tokenizer and, for a shared PEFT model, the adapter to use."""

    model: Any
    tokenizer: Any
    adapter: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _display_name(name_or_path: str) -> str:
    path = Path(name_or_path)
    return f"{path.name} (local folder)" if path.is_dir() else name_or_path


def _tokenizer_of(model_name_or_path: str, fallback: Any) -> Any:
    """The tokenizer saved with a merged model, or the base model's when the folder has none."""
    try:
        return load_tokenizer(model_name_or_path)
    except ModelLoadError as error:
        logger.warning("using the base model's tokenizer for '%s' (%s)", model_name_or_path, error)
        return fallback


class _RowCollector:
    """A ``generate`` streamer that collects the new tokens of each batch row and signals every step."""

    def __init__(self, panels: Sequence[str], stop_ids: Sequence[int], updates: queue.Queue):
        self.tokens: dict[str, list[int]] = {panel: [] for panel in panels}
        self._panels = list(panels)
        self._stop_ids = set(stop_ids)
        self._finished = [False] * len(panels)
        self._updates = updates
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        for row, tokens in enumerate(value.reshape(len(self._panels), -1).tolist()):
            for token in tokens:
                if self._finished[row]:
                    break
                if token in self._stop_ids:
                    self._finished[row] = True
                else:
                    self.tokens[self._panels[row]].append(token)
        self._updates.put(None)

    def end(self) -> None:
        """Called by ``generate`` when it returns; the job wrapper signals completion itself."""


class SideBySideModels:
    """The base and CAI models of the Space, loaded once; see the module docstring for how they share memory.

    Build it with :meth:`from_config`. ``load_error`` holds the reason when the CAI model could not be loaded (the
    base panel still works).
    """

    def __init__(
        self,
        engines: Mapping[str, _Engine],
        *,
        base_label: str,
        cai_label: str | None,
        load_error: str | None = None,
        max_input_tokens: int = 4096,
    ):
        self._engines = dict(engines)
        self.base_label = base_label
        self.cai_label = cai_label
        self.load_error = load_error
        self.max_input_tokens = max_input_tokens

    @property
    def panels(self) -> tuple[str, ...]:
        """The panels that have a model: ``("base", "cai")``, or ``("base",)`` when the CAI model is missing."""
        return tuple(panel for panel in PANELS if panel in self._engines)

    @property
    def loaded_models(self) -> list[Any]:
        """The distinct models held in memory (one when the CAI model is an adapter on the base)."""
        distinct: dict[int, Any] = {}
        for engine in self._engines.values():
            distinct.setdefault(id(engine.model), engine.model)
        return list(distinct.values())

    @property
    def shares_base(self) -> bool:
        """True when both panels run on one model in memory (the CAI model is an adapter on the base)."""
        return "cai" in self._engines and self._engines["cai"].model is self._engines["base"].model

    @classmethod
    def from_config(cls, config: SpaceConfig) -> SideBySideModels:
        """Load the models named by ``config``.

        Raises :class:`hf_cai.modeling.ModelLoadError` when the base model cannot be loaded. A CAI model that cannot
        be loaded is logged and reported in ``load_error``; the base model is served alone.
        """
        base_label = _display_name(config.base_model)
        tokenizer = load_tokenizer(config.base_model)
        cai = config.cai_model
        if cai is None:
            base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
            return cls({"base": _Engine(base, tokenizer)}, base_label=base_label, cai_label=None,
                       max_input_tokens=config.max_input_tokens)
        cai_label = _display_name(cai)
        # Any failure of the CAI model (missing repo, corrupt weights, wrong shapes) must leave a working base-only
        # Space with the reason on screen, so everything is caught at this start-up boundary.
        try:
            if is_peft_adapter(cai):
                model = load_causal_lm(config.base_model, adapter=cai, load_in_4bit=config.load_in_4bit)
                model.eval()
                shared_lock = threading.Lock()
                engines = {
                    "base": _Engine(model, tokenizer, BASE_ADAPTER, shared_lock),
                    "cai": _Engine(model, tokenizer, model.active_adapter, shared_lock),
                }
                return cls(engines, base_label=base_label, cai_label=f"{cai_label} · LoRA adapter",
                           max_input_tokens=config.max_input_tokens)
            base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
            cai_engine = _Engine(load_causal_lm(cai, load_in_4bit=config.load_in_4bit), _tokenizer_of(cai, tokenizer))
            return cls({"base": _Engine(base, tokenizer), "cai": cai_engine}, base_label=base_label,
                       cai_label=cai_label, max_input_tokens=config.max_input_tokens)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            message = (
                f"The CAI model '{cai}' could not be loaded, so only the base model answers. Reason: {reason}. "
                "Check the model id or path (and HF_TOKEN for a private repository), then restart."
            )
            logger.error(message)
        base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
        return cls({"base": _Engine(base, tokenizer)}, base_label=base_label, cai_label=cai_label,
                   load_error=message, max_input_tokens=config.max_input_tokens)

    # ----------------------------------------------------------------- generation
    def stream(
        self,
        conversations: Mapping[str, Sequence[Message]],
        *,
        max_new_tokens: int,
        temperature: float,
        cancel: threading.Event | None = None,
    ) -> Iterator[dict[str, str]]:
        """Generate the next assistant reply of each panel's conversation, yielding all partial replies each step.

        Args:
            conversations: Panel name (``"base"``/``"cai"``) → chat messages ending with a user message. Panels
                without a loaded model are skipped.
            max_new_tokens: Most tokens per reply.
            temperature: Sampling temperature; 0 decodes greedily.
            cancel: When set (e.g. the visitor left), decoding stops after the current step.
        """
        cancel = cancel or threading.Event()
        wanted = [panel for panel in self.panels if panel in conversations]
        jobs: dict[int, list[str]] = {}
        for panel in wanted:
            jobs.setdefault(id(self._engines[panel].model), []).append(panel)
        updates: queue.Queue = queue.Queue()
        collectors = []
        for panels in jobs.values():
            engine = self._engines[panels[0]]
            collector = _RowCollector(panels, end_of_turn_ids(engine.model, engine.tokenizer), updates)
            collectors.append(collector)
            worker = threading.Thread(
                target=self._run_job,
                args=(panels, [conversations[p] for p in panels], collector, max_new_tokens, temperature, cancel,
                      updates),
                daemon=True,
            )
            worker.start()
        running = len(collectors)
        try:
            while running:
                items = [updates.get()]
                while not updates.empty():
                    items.append(updates.get_nowait())
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                    if item is _DONE:
                        running -= 1
                yield {
                    panel: self._engines[panel].tokenizer.decode(tokens, skip_special_tokens=True)
                    for collector in collectors
                    for panel, tokens in collector.tokens.items()
                }
        finally:
            cancel.set()

    def generate(self, panel: str, conversation: Sequence[Message], *, max_new_tokens: int, temperature: float) -> str:
        """The full next reply of one panel's model to ``conversation``."""
        reply = ""
        for replies in self.stream({panel: conversation}, max_new_tokens=max_new_tokens, temperature=temperature):
            reply = replies[panel]
        return reply

    def _run_job(
        self,
        panels: list[str],
        conversations: list[Sequence[Message]],
        collector: _RowCollector,
        max_new_tokens: int,
        temperature: float,
        cancel: threading.Event,
        updates: queue.Queue,
    ) -> None:
        try:
            engine = self._engines[panels[0]]
            self._generate(engine, panels, conversations, collector, max_new_tokens, temperature, cancel)
        except Exception as error:
            logger.exception("generation failed for %s", ", ".join(panels))
            updates.put(error)
        finally:
            updates.put(_DONE)

    def _generate(self, engine, panels, conversations, collector, max_new_tokens, temperature, cancel) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        tokenizer = engine.tokenizer
        texts = [render_chat(tokenizer, fit_conversation(c, tokenizer, self.max_input_tokens)) for c in conversations]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": end_of_turn_ids(engine.model, tokenizer),
            "streamer": collector,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
        }
        if temperature > 0:
            options["temperature"] = temperature
        if engine.adapter is not None:
            options["adapter_names"] = [self._engines[p].adapter for p in panels]
        with engine.lock, torch.inference_mode():
            engine.model.generate(**inputs.to(engine.model.device), **options)
