"""The bundled engine: a V4 model running in this process, with the prefix cache on disk.

    from whalebone.engine.runtime.bundled import BundledEngine
    eng = BundledEngine.default()                       # the shipped nano checkpoint
    eng = BundledEngine.from_checkpoint("path/to/ckpt", cache_dir="~/.whalebone/cache")
    eng = BundledEngine.random("micro", seed=0)        # random weights: tests and benchmarks
    async for event in eng.stream(GenerationRequest(prompt=rendered, max_tokens=256)): ...

One request: tokenize with the real V4 tokenizer (or take ``prompt_ids``), map ids through the
checkpoint's :class:`~whalebone.engine.runtime.vocab.VocabMap`, restore the longest cached
prefix from disk, prefill the rest in chunks, then decode one token per forward pass (two with
a checkpoint's MTP block and greedy sampling: :mod:`~whalebone.engine.runtime.speculative`,
same tokens as plain decoding). Every
forward pass runs in a worker thread (``anyio.to_thread.run_sync``), so the event loop stays
free, and the engine checks for cancellation between passes. Snapshots are written when the
request ends (so they never delay the first token), at the points where a later request can
continue (chosen by :class:`~whalebone.engine.runtime.snapshot_plan.SnapshotPlan`):

- the last 64-token boundary of the prompt (DeepSeek's cache unit): a shared prefix with a
  different ending hits it;
- the stable end of the prompt: just before the ``<think>`` that follows the last
  ``<｜Assistant｜>``. With thinking on, the next turn re-renders this turn's assistant prefix
  with ``</think>`` and without the reasoning, so everything before that token is all the next
  turn can share; a retry restores it and prefills one token (``</think>``, chat mode's
  marker, stays in later turns: nothing to do there);
- the end of the prompt: a retry, or thinking with tools (the reasoning is kept, ``<think>``
  stays);
- where the next turn's rendering of the completion will first differ from the sampled ids
  (a model may spell a word with other tokens than the tokenizer does);
- after the completion, its last sampled token (the EOS) fed too: the next turn of an
  append-only conversation (chat mode, or tools) hits every token it re-sends. When the model
  stopped inside its reasoning, the next turn renders ``</think>`` before that EOS, so the
  state before the EOS is kept instead.

Usage counts restored tokens as ``prompt_cache_hit_tokens``, like DeepSeek's API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import torch

from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home
from whalebone.engine.base import (
    Engine,
    EngineError,
    EngineRequestError,
    Finished,
    GenerationRequest,
    StreamEvent,
    TextDelta,
    Usage,
)
from whalebone.engine.runtime.prefix_cache import DEFAULT_BUDGET, PrefixCache, SnapshotIgnored
from whalebone.engine.runtime.progress import Progress
from whalebone.engine.runtime.sampling import Detokenizer, Sampler, StopScanner
from whalebone.engine.runtime.snapshot_plan import SnapshotPlan
from whalebone.engine.runtime.speculative import Drafter, Speculator, mode_from
from whalebone.engine.runtime.vocab import FILENAME as VOCAB_FILE
from whalebone.engine.runtime.vocab import V4_VOCAB_SIZE, VocabMap

if TYPE_CHECKING:
    from whalebone.engine.v4.model import Transformer
    from whalebone.engine.v4.state import SeqState

# A retokenized completion is re-prefilled from the prompt's snapshot only this far, and only
# at contexts where that prefill is quick (each token scores every indexer key before it:
# ~130 tok/s at 128K on the loaded 2-core machine, 8 at 1M).
RETOKENIZED_MAX = 256
RETOKENIZED_CONTEXT_MAX = 131_072
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "whalebone-nano"


def default_cache_dir() -> Path:
    """``$WHALEBONE_HOME/cache`` (``~/.whalebone/cache`` by default)."""
    return home() / "cache"


@dataclass
class RequestStats:
    """Where one request's time went (seconds), for benchmarks and ``whalebone`` diagnostics."""

    prompt_tokens: int = 0
    hit_tokens: int = 0
    restore_s: float = 0.0
    prefill_s: float = 0.0
    first_token_s: float = 0.0  # from the start of the request to the first sampled token
    decode_s: float = 0.0
    snapshot_s: float = 0.0
    completion_tokens: int = 0
    completion_ids: list[int] = field(default_factory=list)  # V4 ids sampled, EOS included
    prompt_ids: list[int] = field(default_factory=list)  # V4 ids of the prompt
    snapshots: list[int] = field(default_factory=list)  # prefix lengths written
    snapshot_bytes: int = 0  # state bytes those snapshots hold
    drafted: int = 0  # speculative decoding: tokens the MTP block drafted
    accepted: int = 0  # drafts the trunk agreed with (each saved a trunk pass)
    decode_passes: int = 0  # trunk forwards while decoding (completion_tokens with no drafts)


@dataclass
class _Run:
    """One request's mutable state, owned by the worker thread between awaits (and by
    :class:`~whalebone.engine.runtime.speculative.Speculator`'s steps)."""

    ids: list[int]  # V4 ids fed to the model so far
    state: SeqState
    logits: torch.Tensor  # (vocab,) logits after ``ids``
    pending: list[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]
    drafter: Drafter | None = None  # speculative decoding's MTP side


class BundledEngine(Engine):
    """A V4 transformer on this machine's CPU or GPU, with a disk prefix cache."""

    name = "bundled"
    model = "whalebone-local"  # the pricing name: the bundled engine costs nothing
    served_name: str | None = None  # what serve calls a checkpoint: its folder's name

    def __init__(self, transformer: Transformer, *, vocab: VocabMap | None = None,
                 cache: PrefixCache | None = None, prefill_chunk: int = 1024,
                 progress: bool | None = None, context_window: int = 1_048_576,
                 speculative: str | bool | None = None) -> None:
        """``speculative``: draft with the model's MTP block when sampling is greedy (same
        output, fewer trunk passes): ``auto`` while it pays, ``on``/True, ``off``/False;
        None reads ``$WHALEBONE_SPECULATIVE`` (unset: off)."""
        from whalebone.dsml.tokenizer import load_tokenizer

        self.transformer = transformer
        self.cfg = transformer.cfg
        self.tokenizer = load_tokenizer()
        self.vocab = vocab or VocabMap.identity(self.tokenizer.vocab_size)
        if self.vocab.size != self.cfg.vocab_size:
            raise EngineError(f"the vocabulary table has {self.vocab.size} ids but the model "
                              f"has {self.cfg.vocab_size}")
        self.cache = cache
        if prefill_chunk < 1:
            raise EngineError("prefill_chunk must be >= 1")
        self.prefill_chunk = prefill_chunk
        self.progress = progress
        self.context_window = context_window
        self.eos_model_id = self.vocab.to_model([self.tokenizer.eos_id])[0]
        self.plan = SnapshotPlan(self.tokenizer)
        self._forward_lock = threading.Lock()  # concurrent requests take turns per pass
        self.last_stats = RequestStats()
        self.forward_passes = 0  # over the engine's life: cancellation stops it growing
        try:
            mode = mode_from(speculative)
        except ValueError as e:
            raise EngineError(str(e)) from None
        self.speculative = mode if transformer.has_mtp else "off"
        self.speculator = Speculator(self, self.speculative)

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def cache_fingerprint(transformer: Transformer, vocab: VocabMap) -> str:
        """The prefix cache's model key: weights and config, and the id table (the same
        weights read through another table see different ids)."""
        import hashlib

        table = hashlib.sha256(repr((vocab.v4_vocab_size, vocab.model_to_v4)).encode())
        return f"{transformer.fingerprint()}-{table.hexdigest()[:16]}"

    @classmethod
    def _with_cache(cls, transformer: Transformer, vocab: VocabMap,
                    cache_dir: str | Path | None, cache_bytes: int, use_cache: bool,
                    **kwargs: object) -> BundledEngine:
        cache = None
        if use_cache:
            cache = PrefixCache(cache_dir if cache_dir is not None else default_cache_dir(),
                                fingerprint=cls.cache_fingerprint(transformer, vocab),
                                budget_bytes=cache_bytes)
        return cls(transformer, vocab=vocab, cache=cache, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def random(cls, preset: str = "micro", *, seed: int = 0, cache_dir: str | Path | None = None,
               cache_bytes: int = DEFAULT_BUDGET, use_cache: bool = True, mtp: int = 0,
               **kwargs: object) -> BundledEngine:
        """Random weights of a preset shape (``micro``, ``nano``, …), with ``mtp`` MTP blocks:
        the same seed gives the same weights, and so the same cache fingerprint, in every
        process."""
        from whalebone.engine.v4.config import ModelConfig
        from whalebone.engine.v4.model import Transformer

        cfg = ModelConfig.preset(preset)
        if mtp:
            cfg = cfg.with_mtp(mtp)
        transformer = Transformer(cfg, seed=seed)
        vocab = VocabMap.for_size(cfg.vocab_size)
        return cls._with_cache(transformer, vocab, cache_dir, cache_bytes, use_cache, **kwargs)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, *, cache_dir: str | Path | None = None,
                        cache_bytes: int = DEFAULT_BUDGET, use_cache: bool = True,
                        progress: bool | None = None, **kwargs: object) -> BundledEngine:
        """Load weights (and ``vocab.json`` when the checkpoint has a smaller vocabulary)."""
        from whalebone.engine.v4.weights import load_checkpoint

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise EngineError(f"no checkpoint folder at {folder}")
        with Progress(0, f"loading {folder.name}", enabled=progress) as bar, bar.ticking():
            try:
                transformer = load_checkpoint(folder)
            except WhaleboneError as e:
                raise EngineError(f"cannot load the checkpoint in {folder}: {e}") from e
        vocab = VocabMap.load(folder)
        if vocab is None:
            if transformer.cfg.vocab_size != V4_VOCAB_SIZE:
                raise EngineError(f"the checkpoint in {folder} has {transformer.cfg.vocab_size} "
                                  f"token ids, not V4's {V4_VOCAB_SIZE}, and no {VOCAB_FILE} "
                                  "to map them")
            vocab = VocabMap.identity()
        engine = cls._with_cache(transformer, vocab, cache_dir, cache_bytes, use_cache,
                                 progress=progress, **kwargs)
        engine.served_name = folder.resolve().name
        return engine

    @classmethod
    def default(cls, cache_dir: str | Path | None = None, **kwargs: object) -> BundledEngine:
        """The checkpoint shipped with whalebone (``engine/checkpoints/whalebone-nano``)."""
        if not (CHECKPOINT_DIR / "config.json").exists():
            raise EngineError(f"no bundled checkpoint is installed (looked in {CHECKPOINT_DIR}); "
                              "use BundledEngine.from_checkpoint(folder) or a remote engine")
        return cls.from_checkpoint(CHECKPOINT_DIR, cache_dir=cache_dir, **kwargs)  # type: ignore[arg-type]

    # -- the request ----------------------------------------------------------------------

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The request's prompt as V4 token ids, checked."""
        if request.prompt_ids is not None:
            ids = list(request.prompt_ids)
            bad = [i for i in ids if not 0 <= i < self.vocab.v4_vocab_size]
            if bad:
                raise EngineRequestError(f"prompt token id {bad[0]} is outside V4's vocabulary")
        elif request.prompt is not None:
            ids = self.tokenizer.encode(request.prompt)
        elif request.messages is not None:
            from whalebone.dsml.encoder import encode_messages

            ids = self.tokenizer.encode(encode_messages(
                request.messages, request.thinking_mode, reasoning_effort=request.reasoning_effort))
        else:
            raise EngineRequestError("a request needs a prompt, prompt ids or messages")
        if not ids:
            raise EngineRequestError("the prompt is empty")
        if len(ids) + request.max_tokens > self.context_window:
            raise EngineRequestError(
                f"prompt of {len(ids)} tokens + max_tokens {request.max_tokens} exceeds the "
                f"context window of {self.context_window}")
        return ids

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        ids = self.prompt_ids(request)
        mask = self.vocab.sampleable_mask()
        drafter = (Drafter(self.transformer, mask) if self.speculative != "off"
                   and request.sampling.temperature == 0.0 else None)
        run, stats = await self._prepare(ids, drafter)

        sampler = Sampler(request.sampling, mask=mask)
        detok = Detokenizer(self.tokenizer.decode)
        scanner = StopScanner(request.stop)
        finish = "length"
        generated = 0
        decode_start = time.perf_counter()
        unfed: tuple[int, int] | None = None  # the last sampled token (V4 id, model id)
        last: tuple[int, int] | None = None
        queue: list[int] = []  # sampled, not yet shown: a speculative step gives two
        passes = self.forward_passes
        while generated < request.max_tokens:
            if not queue:
                queue = await anyio.to_thread.run_sync(self._step, run, sampler, unfed,
                                                       request.max_tokens - generated)
            token = queue.pop(0)
            generated += 1
            if generated == 1:
                stats.first_token_s = time.perf_counter() - started
            v4_id = self.vocab.to_v4([token])[0]
            stats.completion_ids.append(v4_id)
            last = (v4_id, token)
            if token == self.eos_model_id:
                finish = "stop"
                break
            shown = scanner.feed(detok.push(v4_id))
            if shown:
                yield TextDelta(text=shown)
            if scanner.stopped:
                finish = "stop"
                break
            unfed = (v4_id, token)
        if not scanner.stopped:
            tail = scanner.feed(detok.flush()) + scanner.flush()
            if tail:
                yield TextDelta(text=tail)
        if drafter is not None:
            await anyio.to_thread.run_sync(self.speculator.settle, run, len(queue))
            stats.drafted, stats.accepted = drafter.drafted, drafter.accepted
        stats.decode_passes = self.forward_passes - passes  # other requests' passes included
        stats.decode_s = time.perf_counter() - decode_start
        stats.completion_tokens = generated

        if self.cache is not None and last is not None and not self.plan.closes_reasoning(
                ids, stats.completion_ids):
            # The state holds every completion token but the last sampled one (the EOS, as a
            # rule), which the next turn re-sends: one more pass so that it hits too.
            await anyio.to_thread.run_sync(self._advance, run, [last[0]], [last[1]])
        run.pending.append((list(run.ids), {}, run.logits))
        await anyio.to_thread.run_sync(self._write_snapshots, run, stats)
        if self.cache is not None:
            await anyio.to_thread.run_sync(self._snapshot_retokenized, ids, stats)
        hit = stats.hit_tokens
        usage = Usage(prompt_tokens=len(ids), prompt_cache_hit_tokens=hit,
                      prompt_cache_miss_tokens=len(ids) - hit, completion_tokens=generated)
        notes = [f"prefix cache: {hit} of {len(ids)} prompt tokens restored"] if hit else []
        if drafter is not None and drafter.drafted:
            notes.append(f"speculative decoding: {drafter.accepted} of {drafter.drafted} "
                         f"drafts accepted ({generated} tokens in {stats.decode_passes} passes)")
        yield Finished(finish_reason=finish, text=scanner.text, usage=usage,  # type: ignore[arg-type]
                       engine=self.name, model=self.model, notes=notes)

    async def next_logits(self, prompt_ids: list[int], *,
                          snapshot: bool = True) -> tuple[torch.Tensor, int]:
        """The next-token logits after ``prompt_ids`` (model ids' order, shape ``(vocab,)``)
        and how many prompt tokens came from the cache: what ``stream`` samples its first
        token from (evaluation, scoring, and the bit-exactness check of restores)."""
        ids = self.prompt_ids(GenerationRequest(prompt_ids=prompt_ids, max_tokens=1))
        run, stats = await self._prepare(ids)
        if snapshot:
            await anyio.to_thread.run_sync(self._write_snapshots, run, stats)
        return run.logits, stats.hit_tokens

    async def _prepare(self, ids: list[int],
                       drafter: Drafter | None = None) -> tuple[_Run, RequestStats]:
        """Restore the longest cached prefix of ``ids`` and prefill the rest."""
        stats = RequestStats(prompt_tokens=len(ids), prompt_ids=ids)
        self.last_stats = stats
        run = await anyio.to_thread.run_sync(self._restore, ids, stats)
        run.drafter = drafter
        await self._prefill(run, ids, stats)
        return run, stats

    # -- steps, each run in a worker thread -----------------------------------------------

    def _restore(self, ids: list[int], stats: RequestStats) -> _Run:
        t0 = time.perf_counter()
        if self.cache is not None:
            from whalebone.engine.v4.state import SeqState, StateError

            hit = self.cache.lookup(ids)
            if hit is not None:
                try:  # checked against this model's state layout before any use
                    state = SeqState.from_tensors(self.cfg, hit.state)
                    if (state.pos != hit.length
                            or tuple(hit.logits.shape) != (self.cfg.vocab_size,)):
                        raise StateError(f"snapshot of {hit.length} tokens holds pos "
                                         f"{state.pos} and logits of shape "
                                         f"{tuple(hit.logits.shape)}")
                    if not bool(torch.isfinite(hit.logits).all()):
                        raise StateError("its logits are not all finite")
                except (StateError, RuntimeError, TypeError) as e:
                    self.cache.discard(hit.digest, f"does not fit this model ({e})")
                else:
                    stats.hit_tokens = hit.length
                    stats.restore_s = time.perf_counter() - t0
                    return _Run(list(ids[:hit.length]), state, hit.logits.float(), [])
        stats.restore_s = time.perf_counter() - t0
        return _Run([], self.transformer.new_state(), torch.empty(0), [])

    # Every torch call of a request runs in the worker thread, sampling included: torch ops
    # issued from two threads start two OpenMP pools that spin against each other (20x slower
    # decode on a busy 2-core machine, measured).

    def _advance(self, run: _Run, v4_ids: list[int], model_ids: list[int],
                 snapshot: bool = False, hidden: bool = False) -> None:
        """Feed tokens; ``hidden``: hand the trunk's streams to the drafter too (the logits
        stay exactly those of a ``last_only`` forward)."""
        feed = torch.tensor(model_ids, dtype=torch.int64)
        with self._forward_lock:
            if hidden and run.drafter is not None:
                start = run.state.pos
                h = self.transformer.streams(feed, run.state)
                with torch.inference_mode():  # the last row's, as forward(last_only) has it
                    logits = self.transformer.logits(h[-1:])
                run.drafter.keep(start, h)
            else:
                logits = self.transformer.forward(feed, run.state, last_only=True)
            self.forward_passes += 1
        run.logits = logits[-1]
        run.ids.extend(v4_ids)
        if snapshot:
            run.pending.append((list(run.ids), run.state.to_tensors(), run.logits))

    def _step(self, run: _Run, sampler: Sampler, unfed: tuple[int, int] | None,
              budget: int) -> list[int]:
        """Feed the last sampled token (if any), then sample the next one, or two when a
        draft is verified (at most ``budget``)."""
        drafter = run.drafter
        if drafter is None or unfed is None:
            if unfed is not None:
                self._advance(run, [unfed[0]], [unfed[1]])
            return [sampler(run.logits)]
        return self.speculator.step(run, drafter, sampler, unfed, budget)

    async def _prefill(self, run: _Run, ids: list[int], stats: RequestStats) -> None:
        """Feed the prompt's uncached tail in chunks, one worker-thread call per chunk (the
        cancellation points), keeping the states at the plan's snapshot points."""
        start = len(run.ids)
        if start == len(ids):
            return
        t0 = time.perf_counter()
        model_ids = self.vocab.to_model(ids)
        points = self.plan.points(ids) if self.cache is not None else []
        with Progress(len(ids) - start, "prefill", unit="tok",
                      enabled=self.progress) as bar:
            # the drafter is warmed from the streams of the last window (same chunks)
            warm = len(ids) - self.cfg.window_size if run.drafter is not None else len(ids)
            for lo, hi in chunks(start, len(ids), self.prefill_chunk, points):
                keep = hi in points
                await anyio.to_thread.run_sync(self._advance, run, ids[lo:hi],
                                               model_ids[lo:hi], keep, hi > warm)
                bar.update(hi - lo)
        stats.prefill_s = time.perf_counter() - t0

    def _write_snapshots(self, run: _Run, stats: RequestStats) -> None:
        if self.cache is None:
            return
        t0 = time.perf_counter()
        for ids, tensors, logits in run.pending:
            if len(ids) <= stats.hit_tokens or self.cache.contains(ids):
                continue  # restored from it, or another request wrote it first
            state = tensors or run.state.to_tensors()
            if self.cache.store(ids, state, logits):
                stats.snapshots.append(len(ids))
                stats.snapshot_bytes += sum(t.numel() * t.element_size() for t in state.values())
        stats.snapshot_s = time.perf_counter() - t0

    def _snapshot_retokenized(self, prompt: list[int], stats: RequestStats) -> None:
        """Snapshot the state where the re-rendered completion will part from the sampled
        one, so that the next turn hits up to there (restored from the prompt's snapshot,
        then the completion's first ids prefilled: at most the completion's length)."""
        assert self.cache is not None
        cut = self.plan.retokenized_from(stats.completion_ids)
        if not cut or cut > RETOKENIZED_MAX or len(prompt) + cut > RETOKENIZED_CONTEXT_MAX:
            return  # the re-prefill would cost more than the next turn's miss saves
        t0 = time.perf_counter()
        seq = prompt + stats.completion_ids[:cut]
        if self.cache.contains(seq):
            return
        run = self._restore(seq, RequestStats())
        if len(run.ids) < len(prompt):
            return  # the prompt's snapshots were not written (budget, disk): nothing to save
        self._advance(run, seq[len(run.ids):], self.vocab.to_model(seq[len(run.ids):]))
        state = run.state.to_tensors()
        if self.cache.store(seq, state, run.logits):
            stats.snapshots.append(len(seq))
            stats.snapshot_bytes += sum(t.numel() * t.element_size() for t in state.values())
        stats.snapshot_s += time.perf_counter() - t0

    # -- the rest of the interface --------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.close()


def chunks(start: int, end: int, size: int,
           split: int | Iterable[int] | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` cut into pieces of at most ``size`` tokens on absolute multiples of
    ``size`` (so two prefills of one prompt cut it alike), also cut at ``split`` (one length
    or several)."""
    cuts = {end}
    cuts.update(range((start // size + 1) * size, end, size))
    splits = [] if split is None else [split] if isinstance(split, int) else split
    cuts.update(s for s in splits if start < s < end)
    out, lo = [], start
    for hi in sorted(cuts):
        out.append((lo, hi))
        lo = hi
    return out


__all__ = ["BundledEngine", "RequestStats", "SnapshotIgnored", "chunks", "default_cache_dir"]
