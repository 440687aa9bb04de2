"""The Space's replies decoded together: requests that arrive together share one generation batch.

Every chat event asks for one reply per panel (base and CAI). A :class:`ReplyBatcher` owns one loaded model. While it
is idle, the first request starts a short collection window (``window`` seconds, also waited after every batch, so the
visitors whose replies just ended can send their next turn); everything that arrived by then, up to
``max_batch_size`` replies, is decoded in ONE left-padded ``generate`` call, and the rest waits for the next batch.
When the CAI model is a LoRA adapter on the base, base and CAI rows share that batch: PEFT's mixed-adapter batches
run each row with its own adapter (``"__base__"`` is the adapter switched off), so one forward pass per token serves
every visitor and both panels.

A row's reply does not depend on the rows beside it:

- rows are padded on the left and masked, and their positions count from their own first token, as in
  :class:`~hf_cai.backends.TransformersBackend`;
- a sampled row draws each token from its own ``torch.Generator`` seeded with its request's seed
  (:func:`hf_cai.backends.decoding.make_row_sampler`, the backend's sampler); a greedy row takes the most likely token;
- each row ends at its own end-of-turn token, its own ``max_new_tokens``, or when its visitor leaves (the row is
  then marked finished and costs nothing more once every row of the batch is).

So a reply is the one a batch of one gives at the same seed. That is exact in float32 (the tests check it); in
bfloat16, the default on CPUs with fast bfloat16, the rounding of matrix products changes with the batch shape, and
once one token differs the rest of the reply does too.

After each batch, every answered row's keys and values are kept (:mod:`hf_cai.spaces.prefix_cache`), so the next turn
of that conversation computes only its new tokens: on a CPU the prompt pass is what grows with every visitor and turn.

Each decoding step, the new tokens are appended to each request's ``tokens`` and its caller's update queue is
signalled, so every visitor sees their replies grow while the batch decodes (see :func:`stream_replies`).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from hf_cai.backends.batching import cache_name, output_cache
from hf_cai.backends.chat_tokens import encode_chats, end_of_turn_ids
from hf_cai.backends.decoding import greedy_generation_config, make_row_sampler
from hf_cai.conversation import Conversation
from hf_cai.spaces.prefix_cache import CachedPrefix, PrefixCache, batch_inputs, reusable, row_prefix

logger = logging.getLogger(__name__)

TRIMMED_TURNS = "turns"
"""``ReplyRequest.trimmed`` when the conversation's earliest turns were left out to fit the input budget."""
TRIMMED_MESSAGE = "message"
"""``ReplyRequest.trimmed`` when even the last message alone was too long, and only its end was kept."""


class ReplyRequest:
    """One reply wanted from a :class:`ReplyBatcher`'s model, and its progress.

    Args:
        conversation: Chat messages ending with the user's message.
        max_new_tokens: Most tokens of the reply.
        temperature: Sampling temperature; 0 decodes greedily.
        seed: Seed of the row's own random generator (unused when greedy).
        adapter: For a PEFT model, the adapter that answers (``"__base__"``: none); ``None`` for a plain model.

    While the batch decodes, ``tokens`` grows; ``finish_reason`` becomes ``"stop"`` (end of turn), ``"length"``
    (``max_new_tokens`` reached) or ``"cancelled"``, or ``error`` holds why the batch failed. ``trimmed`` says how the
    input was cut to fit (:data:`TRIMMED_TURNS`, :data:`TRIMMED_MESSAGE`), ``None`` when it was not.
    """

    def __init__(
        self,
        conversation: Conversation,
        *,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        adapter: str | None = None,
    ):
        self.conversation = conversation
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.adapter = adapter
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.trimmed: str | None = None
        self._input_ids: list[int] = []
        self._updates: queue.Queue | None = None
        self._cancelled = threading.Event()

    @property
    def done(self) -> bool:
        """True once the reply is complete, cancelled or failed."""
        return self.finish_reason is not None or self.error is not None

    def cancel(self) -> None:
        """Stop decoding this reply after the current step (the visitor left); the other rows go on."""
        self._cancelled.set()

    def _end(self, reason: str) -> None:
        self.finish_reason = reason


class ReplyBatcher:
    """Decodes the requests of all visitors for one loaded model in shared batches (see the module docstring).

    Args:
        model: A causal LM, or a PEFT model whose adapters the requests name.
        tokenizer: Its tokenizer, with a chat template.
        max_batch_size: Most replies decoded in one batch.
        window: Seconds to wait for more requests before a batch starts.
        max_input_tokens: Token budget of a conversation; the earliest turns are dropped to fit, then, when the last
            message alone is too long, its beginning.

    ``batch_sizes`` counts the batches decoded so far by their number of replies.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        window: float = 0.1,
        max_input_tokens: int = 4096,
        prefix_cache_bytes: int = 256 * 2**20,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.window = window
        self.max_input_tokens = max_input_tokens
        self.prefixes = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        """The kept keys and values of recent conversations (:mod:`hf_cai.spaces.prefix_cache`); ``None`` when off."""
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._eos_ids = end_of_turn_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        context = getattr(text_config, "max_position_embeddings", None)
        self._context = context if isinstance(context, int) and context > 0 else None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None:
            # The prompt's last position reaches the output head as a strided view; torch's matmul then copies the
            # head's weight once per row (1.1 GB for 20 rows of a 49k vocabulary), the costliest step of a batch.
            head.register_forward_pre_hook(_contiguous_input)
        self._pending: collections.deque[ReplyRequest] = collections.deque()
        self._arrived = threading.Condition()
        self._serving = False
        # One generate call at a time on the model (decode_alone calls may overlap): PEFT's mixed-adapter batches
        # hook the adapter names into the shared model for the whole call.
        self._generating = threading.Lock()

    def text(self, request: ReplyRequest) -> str:
        """The reply so far, decoded."""
        return self.tokenizer.decode(list(request.tokens), skip_special_tokens=True)

    def submit(self, requests: Sequence[ReplyRequest], updates: queue.Queue) -> None:
        """Queue ``requests`` for the next batch; ``updates`` receives an item after each step that changed one.

        The conversations are encoded here, in the caller's thread, so a conversation that cannot be encoded fails
        its own caller and never a batch.
        """
        for request in requests:
            self._encode(request)
            request._updates = updates
        with self._arrived:
            self._pending.extend(requests)
            self._arrived.notify()
            if not self._serving:
                self._serving = True
                threading.Thread(target=self._serve, name="reply-batcher", daemon=True).start()

    def decode_alone(self, requests: Sequence[ReplyRequest], updates: queue.Queue) -> None:
        """Decode ``requests`` as one batch in a thread of the caller's own, outside the shared batches (for hosts
        such as ZeroGPU, where only the calling function may use the accelerator)."""
        for request in requests:
            self._encode(request)
            request._updates = updates
        threading.Thread(target=self._decode_safely, args=(list(requests),), daemon=True).start()

    # ------------------------------------------------------------------ batches
    def _encode(self, request: ReplyRequest) -> None:
        limit = self.max_input_tokens
        if self._context is not None:
            limit = min(limit, self._context - request.max_new_tokens)
        if limit < 1:
            raise ValueError(
                f"no room for the conversation: the model's context is {self._context} tokens and the reply may take "
                f"{request.max_new_tokens}; ask for fewer new tokens"
            )
        (encoded,) = encode_chats(self.tokenizer, [request.conversation], limit)
        request._input_ids = encoded.ids
        if encoded.truncated:
            request.trimmed = TRIMMED_TURNS if encoded.text is not None else TRIMMED_MESSAGE

    def _serve(self) -> None:
        """The worker: gather a batch, decode it, repeat while requests are waiting; then stop until the next."""
        while True:
            batch = self._gather()
            if not batch:
                return
            self._decode_safely(batch)

    def _gather(self) -> list[ReplyRequest]:
        deadline = time.monotonic() + self.window
        with self._arrived:
            while len(self._pending) < self.max_batch_size and (remaining := deadline - time.monotonic()) > 0:
                self._arrived.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch_size, len(self._pending)))]
            if not batch:
                self._serving = False
            return batch

    def _decode_safely(self, batch: list[ReplyRequest]) -> None:
        try:
            self._decode(batch)
        except Exception as error:
            logger.exception("generating a batch of %d replies failed", len(batch))
            for request in batch:
                if not request.done:
                    request.error = error
        finally:
            _notify(batch)

    def _decode(self, batch: list[ReplyRequest]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        for request in batch:
            if request._cancelled.is_set():  # the visitor left while the request waited
                request._end("cancelled")
        rows = [request for request in batch if not request.done]
        if not rows:
            return
        self.batch_sizes[len(rows)] += 1
        prefixes = self.prefixes
        reused = [prefixes.find(row.adapter, row._input_ids) if prefixes else (0, None) for row in rows]
        input_ids, attention_mask, cache = batch_inputs(
            self.model, [row._input_ids for row in rows], reused, self._pad_id
        )
        options: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList([_row_tracker(rows, self._eos_ids)])}
        if cache is not None:
            options[cache_name()] = cache
        sampler = _row_samplers(rows)
        if sampler is not None:
            options["logits_processor"] = [sampler]
        if any(row.adapter is not None for row in rows):
            options["adapter_names"] = [row.adapter for row in rows]
        config = greedy_generation_config(max(row.max_new_tokens for row in rows), [], self._eos_ids, self._pad_id)
        config.return_dict_in_generate = prefixes is not None
        with self._generating, torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **options
            )
        for row in rows:
            if not row.done:
                row._end("length")
        if prefixes is not None:
            self._keep_prefixes(prefixes, rows, reused, attention_mask, output_cache(output))

    def _keep_prefixes(
        self,
        prefixes: PrefixCache,
        rows: list[ReplyRequest],
        reused: list[tuple[int, CachedPrefix | None]],
        attention_mask: Any,
        cache: Any,
    ) -> None:
        """Keep each answered row's keys and values (prompt and reply) for the visitor's next turn."""
        import torch

        if not reusable(cache):
            logger.info("this model's cache (%s) cannot be kept between turns; each turn computes its whole prompt",
                        type(cache).__name__)
            self.prefixes = None
            return
        width = attention_mask.shape[1]
        computed = cache.get_seq_length() - width  # the last token of the longest reply has no keys and values yet
        for index, (row, (count, entry)) in enumerate(zip(rows, reused)):
            prefixes.reused_tokens += count
            if row.finish_reason == "cancelled":
                continue
            generated = min(len(row.tokens), computed)
            columns = torch.cat([
                attention_mask[index].nonzero().flatten(),
                torch.arange(width, width + generated, device=attention_mask.device),
            ])
            ids = row._input_ids + row.tokens[:generated]
            prefixes.keep(row_prefix(cache, index, columns, row.adapter, ids), replacing=entry)


def _contiguous_input(module: Any, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def _notify(requests: Sequence[ReplyRequest]) -> None:
    for updates in {id(r._updates): r._updates for r in requests if r._updates is not None}.values():
        updates.put(None)


def _row_tracker(rows: list[ReplyRequest], eos_ids: list[int]):
    """A stopping criterion that hands each row's new token to its request and ends the row at its end-of-turn
    token, its own ``max_new_tokens``, or its visitor's leaving; ``generate`` calls it once per decoding step."""
    import torch
    from transformers import StoppingCriteria

    eos = set(eos_ids)

    class RowTracker(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            for row, token in zip(rows, input_ids[:, -1].tolist()):
                if row.done:
                    continue
                if row._cancelled.is_set():
                    row._end("cancelled")
                elif token in eos:
                    row._end("stop")
                else:
                    row.tokens.append(token)
                    if len(row.tokens) >= row.max_new_tokens:
                        row._end("length")
            _notify(rows)
            return torch.tensor([row.done for row in rows], dtype=torch.bool, device=input_ids.device)

    return RowTracker()


def _row_samplers(rows: list[ReplyRequest]):
    """A logits processor sampling each sampled row with its own generator at its own temperature (the backend's
    sampler, applied per temperature to its rows); greedy rows are left to ``generate``'s argmax. ``None`` when every
    row is greedy."""
    import torch
    from transformers import LogitsProcessor

    by_temperature: dict[float, list[int]] = {}
    for index, row in enumerate(rows):
        if row.temperature > 0:
            by_temperature.setdefault(row.temperature, []).append(index)
    if not by_temperature:
        return None
    groups = [
        (
            torch.tensor(indices),
            make_row_sampler([torch.Generator().manual_seed(rows[i].seed) for i in indices], temperature, 1.0),
        )
        for temperature, indices in by_temperature.items()
    ]

    class RowSamplers(LogitsProcessor):
        def __call__(self, input_ids, scores):
            chosen = scores.clone()
            for indices, sampler in groups:
                indices = indices.to(scores.device)
                chosen[indices] = sampler(input_ids[indices], scores[indices])
            return chosen

    return RowSamplers()


def stream_replies(jobs: Sequence[tuple[ReplyBatcher, ReplyRequest]], *, shared: bool = True) -> Iterator[None]:
    """Submit each request to its batcher, then yield after every decoding step that changed one, and once more when
    all are done.

    Requests for one batcher are submitted together, so they share a batch. Closing the iterator (the visitor left)
    cancels the requests that are still running; an error of their batch is raised here. With ``shared=False`` each
    batcher decodes these requests alone, in threads of this call (see :meth:`ReplyBatcher.decode_alone`).
    """
    updates: queue.Queue = queue.Queue()
    by_batcher: dict[int, tuple[ReplyBatcher, list[ReplyRequest]]] = {}
    for batcher, request in jobs:
        by_batcher.setdefault(id(batcher), (batcher, []))[1].append(request)
    requests = [request for _, request in jobs]
    try:
        for batcher, mine in by_batcher.values():
            (batcher.submit if shared else batcher.decode_alone)(mine, updates)
        while not all(request.done for request in requests):
            updates.get()
            while not updates.empty():
                updates.get_nowait()
            _raise_failure(requests)
            yield
        # The last step may have landed after the previous yield read the tokens: one more with them all.
        _raise_failure(requests)
        yield
    finally:
        for request in requests:
            request.cancel()


def _raise_failure(requests: Sequence[ReplyRequest]) -> None:
    for request in requests:
        if request.error is not None:
            raise request.error
