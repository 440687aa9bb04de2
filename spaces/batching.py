"""The Space's replies decoded together: the requests of all visitors share one generation batch.

Every chat event asks for one reply per panel (base and CAI). A :class:`ReplyBatcher` owns one loaded model and
decodes every reply wanted from it in one batch, up to ``max_batch_size`` replies, with one forward pass per token.
While it is idle, the first request starts a short collection window (``window`` seconds), so requests that arrive
together start together. While it decodes, new requests join the batch every ``join_every`` tokens: their prompt pass
runs apart (so the running rows, one new token each, are not padded to the new prompts), then they decode with the
others, and a visitor never waits for the whole batch to end. Each stretch is one left-padded ``generate`` call that
starts from every row's kept keys and values (:mod:`hf_cai.spaces.prefix_cache`). When the CAI model is a LoRA adapter
on the base, base and CAI rows share the batch: PEFT's mixed-adapter batches run each row with its own adapter
(``"__base__"`` is the adapter switched off).

A row's reply does not depend on the rows beside it:

- rows are padded on the left and masked, and their positions count from their own first token, as in
  :class:`~hf_cai.backends.TransformersBackend`;
- a sampled row draws each token from its own ``torch.Generator`` seeded with its request's seed, kept from stretch to
  stretch
  (:func:`hf_cai.backends.decoding.make_row_sampler`, the backend's sampler); a greedy row takes the most likely token;
- each row ends at its own end-of-turn token, its own ``max_new_tokens``, or when its visitor leaves (the row is
  then marked finished and costs nothing more once every row of the batch is).

So at the same seed a reply is the one a batch of one gives, up to rounding: the matrix products of 20 rows are
blocked differently from those of 2, which moves a row's scores in their last bits, and sampling turns that into another
token now and then (on SmolLM2-135M, 27 of 30 sampled turns were identical in float32 and none in bfloat16; see
``benchmarks/RESULTS.md``). The tests check that the replies are identical on the tiny model in float32.

An answered row's keys and values are kept beyond its reply, so the next turn of that conversation computes only its
new tokens: on a CPU the prompt pass is what grows with every visitor and turn.

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

from hf_cai.backends.batching import cache_name, ensure_pad_token, output_cache
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
        self._generator: Any = None
        self._past: tuple[int, CachedPrefix | None] = (0, None)
        """How many of the row's tokens (prompt, then reply) have their keys and values in which entry."""
        self._reused: CachedPrefix | None = None

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
        window: Seconds an idle batcher waits for more requests before it starts.
        max_input_tokens: Token budget of a conversation; the earliest turns are dropped to fit, then, when the last
            message alone is too long, its beginning.
        join_every: Tokens decoded between two moments at which waiting requests join the batch.
        prefix_cache_bytes: Memory for the keys and values of answered conversations; 0 keeps none.

    ``batch_sizes`` counts the ``generate`` calls so far by their number of replies.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        window: float = 0.1,
        max_input_tokens: int = 4096,
        join_every: int = 16,
        prefix_cache_bytes: int = 256 * 2**20,
    ):
        for name, value in (("max_batch_size", max_batch_size), ("join_every", join_every)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.window = window
        self.max_input_tokens = max_input_tokens
        self._stretch: int | None = join_every
        self.prefixes = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        """The kept keys and values of recent conversations (:mod:`hf_cai.spaces.prefix_cache`); ``None`` when off."""
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._eos_ids = end_of_turn_ids(model, tokenizer)
        self._pad_id = ensure_pad_token(tokenizer).pad_token_id
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
        threading.Thread(target=self._decode_to_end, args=(list(requests),), daemon=True).start()

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
        """The worker: let waiting requests join, decode a stretch, repeat while any reply is unfinished or waiting;
        then stop until the next request."""
        running: list[ReplyRequest] = []
        while True:
            newcomers = self._gather(idle=not running, room=self.max_batch_size - len(running))
            if not running and not newcomers:
                return
            self._start(newcomers)
            if newcomers and running:
                # The newcomers' prompt pass runs apart: in the shared stretch every row then has one new token, and
                # the running rows are not padded to the new prompts' length.
                self._decode_safely(newcomers, 1)
            rows = [row for row in running + newcomers if not row.done]
            self._decode_safely(rows, self._stretch)
            running = [row for row in rows if not row.done]

    def _decode_to_end(self, rows: list[ReplyRequest]) -> None:
        self._start(rows)
        while rows:
            self._decode_safely(rows, self._stretch)
            rows = [row for row in rows if not row.done]

    def _gather(self, *, idle: bool, room: int) -> list[ReplyRequest]:
        """Up to ``room`` waiting requests: while idle, those that arrived within the window; else those waiting."""
        deadline = time.monotonic() + (self.window if idle else 0.0)
        with self._arrived:
            while len(self._pending) < room and (remaining := deadline - time.monotonic()) > 0:
                self._arrived.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
            if idle and not batch:
                self._serving = False
            return batch

    def _start(self, rows: list[ReplyRequest]) -> None:
        """Each new row's random generator, and the kept keys and values its prompt begins with."""
        import torch

        for row in rows:
            row._generator = torch.Generator().manual_seed(row.seed)
            if self.prefixes is not None:
                row._past = self.prefixes.find(row.adapter, row._input_ids)
                row._reused = row._past[1]
                self.prefixes.reused_tokens += row._past[0]

    def _decode_safely(self, rows: list[ReplyRequest], steps: int | None) -> None:
        try:
            self._decode(rows, steps)
        except Exception as error:
            logger.exception("generating a batch of %d replies failed", len(rows))
            for row in rows:
                if not row.done:
                    row.error = error
        finally:
            _notify(rows)

    def _decode(self, rows: list[ReplyRequest], steps: int | None) -> None:
        """Decode ``rows`` for at most ``steps`` tokens (``None``: to the end) in one ``generate`` call, each row
        starting from its kept keys and values."""
        import torch
        from transformers import StoppingCriteriaList

        for row in rows:
            if row._cancelled.is_set() and not row.done:  # the visitor left while the row waited
                row._end("cancelled")
        rows = [row for row in rows if not row.done]
        if not rows:
            return
        self.batch_sizes[len(rows)] += 1
        sequences = [row._input_ids + row.tokens for row in rows]
        input_ids, attention_mask, cache = batch_inputs(self.model, sequences, [row._past for row in rows],
                                                        self.tokenizer)
        for row in rows:  # the batch's cache holds their keys and values now; a row's own copy would double them
            row._past = (0, None)
        options: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList([_row_tracker(rows, self._eos_ids)])}
        if cache is not None:
            options[cache_name()] = cache
        sampler = _row_samplers(rows)
        if sampler is not None:
            options["logits_processor"] = [sampler]
        if any(row.adapter is not None for row in rows):
            options["adapter_names"] = [row.adapter for row in rows]
        remaining = max(row.max_new_tokens - len(row.tokens) for row in rows)
        config = greedy_generation_config(min(remaining, steps or remaining), [], self._eos_ids, self._pad_id)
        config.return_dict_in_generate = True
        before = [len(row.tokens) for row in rows]
        with self._generating, torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **options
            )
        self._keep(rows, sequences, before, attention_mask, output_cache(output))

    def _keep(self, rows: list[ReplyRequest], sequences: list[list[int]], before: list[int], attention_mask: Any,
              cache: Any) -> None:
        """Each row's keys and values so far: for its next stretch while it runs, for the visitor's next turn (the
        prefix cache) once it is answered."""
        import torch

        if not reusable(cache):
            logger.info("this model's cache (%s) cannot be cut into rows: replies are decoded to their end in one "
                        "batch and each turn computes its whole prompt", type(cache).__name__)
            self._stretch, self.prefixes = None, None
            for row in rows:
                row._past = (0, None)
            return
        width = attention_mask.shape[1]
        computed = cache.get_seq_length() - width  # the last token of the longest reply has no keys and values yet
        for index, row in enumerate(rows):
            if row.finish_reason == "cancelled":
                row._past = (0, None)
                continue
            new = min(len(row.tokens) - before[index], computed)
            columns = torch.cat([
                attention_mask[index].nonzero().flatten(),
                torch.arange(width, width + new, device=attention_mask.device),
            ])
            ids = sequences[index] + row.tokens[before[index] : before[index] + new]
            entry = row_prefix(cache, index, columns, row.adapter, ids)
            row._past = (len(ids), entry)
            if row.done and self.prefixes is not None:
                self.prefixes.keep(entry, replacing=row._reused)


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
            make_row_sampler([rows[i]._generator for i in indices], temperature, 1.0),
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
