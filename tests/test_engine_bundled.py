"""The bundled engine on a random ``micro`` model: real forward passes, real cache files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import anyio
import pytest
import torch
from conftest import passes_around_cancel, stream_sync

from whalebone.dsml.tokenizer import load_tokenizer
from whalebone.engine.base import (
    EngineError,
    EngineRequestError,
    GenerationRequest,
    SamplingParams,
)
from whalebone.engine.runtime import bundled as bundled_mod
from whalebone.engine.runtime.bundled import BundledEngine, chunks
from whalebone.engine.runtime.prefix_cache import PrefixCacheWarning, SnapshotIgnored
from whalebone.engine.runtime.vocab import VocabMap
from whalebone.engine.v4.config import ModelConfig


def prompt(n: int, salt: int = 0) -> list[int]:
    """``n`` V4 ids the micro vocabulary keeps (BOS first), varied by ``salt``."""
    eng_vocab = _micro_vocab()
    keep = [v for v in eng_vocab.model_to_v4 if v > 2]
    return [0] + [keep[(i * 7 + salt * 13) % len(keep)] for i in range(n - 1)]


@lru_cache(maxsize=1)
def _micro_vocab() -> VocabMap:
    return VocabMap.for_size(ModelConfig.preset("micro").vocab_size)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def req(ids: list[int], **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt_ids=ids, **kw)  # type: ignore[arg-type]


@pytest.fixture
def engine(tmp_path: Path) -> BundledEngine:
    return BundledEngine.random("micro", seed=0, cache_dir=tmp_path / "cache")


def test_greedy_generation_is_deterministic_and_the_cache_does_not_change_it(
        engine: BundledEngine, tmp_path: Path) -> None:
    ids = prompt(300)
    deltas, first = stream_sync(engine, req(ids, max_tokens=12))
    assert first.usage.prompt_cache_hit_tokens == 0 and first.finish_reason == "length"
    assert "".join(deltas) == first.text and first.usage.completion_tokens == 12
    cold = engine.last_stats.completion_ids
    _, again = stream_sync(engine, req(ids, max_tokens=12))  # restored from the prompt-end snapshot
    assert again.usage.prompt_cache_hit_tokens == 300
    assert again.text == first.text and engine.last_stats.completion_ids == cold
    other = BundledEngine.random("micro", seed=0, use_cache=False)
    _, fresh = stream_sync(other, req(ids, max_tokens=12))
    assert fresh.text == first.text and other.last_stats.completion_ids == cold


def test_a_seeded_sampled_generation_is_reproducible(engine: BundledEngine) -> None:
    ids = prompt(50)

    def sample(seed: int) -> list[int]:
        stream_sync(engine, req(ids, max_tokens=16,
                                sampling=SamplingParams(temperature=1.5, seed=seed)))
        return engine.last_stats.completion_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_max_tokens_and_stop_strings_end_generation_with_their_finish_reason(
        engine: BundledEngine) -> None:
    ids = prompt(40)
    _, free = stream_sync(engine, req(ids, max_tokens=24))
    assert free.finish_reason == "length" and free.usage.completion_tokens == 24
    text = free.text
    stop = next(text[i:i + 2] for i in range(4, len(text) - 2) if text[i:i + 2].strip()
                and text[i:i + 2] not in text[:i + 1])
    deltas, stopped = stream_sync(engine, req(ids, max_tokens=24, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[:text.index(stop)] == "".join(deltas)
    assert stopped.usage.completion_tokens < 24


def test_eos_stops_generation_and_is_counted_but_not_shown(tmp_path: Path) -> None:
    eng = BundledEngine.random("micro", seed=0, use_cache=False)
    ids = prompt(40)
    stream_sync(eng, req(ids, max_tokens=6))
    model_ids = eng.vocab.to_model(eng.last_stats.completion_ids)
    third, eos = model_ids[2], eng.eos_model_id
    assert eos not in model_ids[:3] and third not in model_ids[:2]
    # Give EOS the head row of the third greedy token: a real model that now ends there.
    with torch.no_grad():
        head = eng.transformer.head.weight
        head[[third, eos]] = head[[eos, third]].clone()
    _, fin = stream_sync(eng, req(ids, max_tokens=6))
    assert fin.finish_reason == "stop" and fin.usage.completion_tokens == 3
    assert eng.last_stats.completion_ids[-1] == load_tokenizer().eos_id
    assert "end▁of▁sentence" not in fin.text


def test_cancelling_stops_generation_between_forward_passes(engine: BundledEngine) -> None:
    at_cancel, later = passes_around_cancel(engine, req(prompt(20), max_tokens=5000))
    assert at_cancel == later  # nothing runs on after the cancel
    assert later < 100
    # the engine serves the next request
    _, fin = stream_sync(engine, req(prompt(20), max_tokens=3))
    assert fin.usage.completion_tokens == 3


def test_cancelling_a_long_prefill_stops_between_chunks(tmp_path: Path) -> None:
    eng = BundledEngine.random("micro", seed=0, use_cache=False, prefill_chunk=64)

    async def go() -> None:
        with anyio.move_on_after(0.05):
            await eng.generate(req(prompt(4096), max_tokens=4))

    anyio.run(go)
    assert 1 <= eng.forward_passes < 4096 // 64


def test_the_next_turn_of_an_append_only_conversation_hits_the_cache(
        engine: BundledEngine) -> None:
    turn1 = prompt(300)
    _, one = stream_sync(engine, req(turn1, max_tokens=8))
    completion = engine.last_stats.completion_ids
    assert one.usage.prompt_cache_hit_tokens == 0
    turn2 = turn1 + completion + prompt(40, salt=3)[1:]
    _, two = stream_sync(engine, req(turn2, max_tokens=4))
    # The last sampled token is fed before the completion's snapshot: all of it hits.
    assert two.usage.prompt_cache_hit_tokens == len(turn1) + len(completion)
    assert two.usage.prompt_cache_miss_tokens == len(turn2) - two.usage.prompt_cache_hit_tokens
    assert two.usage.prompt_tokens == len(turn2)
    assert any("restored" in n for n in two.notes)


def test_logits_after_restore_equal_logits_without_cache_bit_exactly(
        engine: BundledEngine) -> None:
    ids = prompt(600)
    _, hit0 = anyio.run(engine.next_logits, ids[:400])
    assert hit0 == 0 and engine.last_stats.snapshots == [384, 400]
    warm, hit = anyio.run(engine.next_logits, ids)
    assert hit == 400
    # The same forward passes with no cache at all: the chunks the two calls cut.
    model, vocab = engine.transformer, engine.vocab
    state = model.new_state()
    for lo, hi in [*chunks(0, 400, engine.prefill_chunk, 384),
                   *chunks(400, 600, engine.prefill_chunk, 576)]:
        cold = model.forward(torch.tensor(vocab.to_model(ids[lo:hi])), state, last_only=True)[-1]
    assert torch.equal(warm, cold)


def test_a_snapshot_written_by_one_process_is_used_by_another(tmp_path: Path) -> None:
    ids = prompt(300, salt=5)
    child = textwrap.dedent("""
        import json, sys, anyio
        from whalebone.engine.runtime.bundled import BundledEngine
        from whalebone.engine.base import GenerationRequest
        eng = BundledEngine.random("micro", seed=0, cache_dir=sys.argv[1])
        ids = json.loads(sys.argv[2])
        fin = anyio.run(eng.generate, GenerationRequest(prompt_ids=ids, max_tokens=6))
        print(json.dumps({"hit": fin.usage.prompt_cache_hit_tokens, "text": fin.text}))
    """)
    cache = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", child, str(cache), json.dumps(ids)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert theirs["hit"] == 0
    eng = BundledEngine.random("micro", seed=0, cache_dir=cache)
    _, mine = stream_sync(eng, req(ids, max_tokens=6))
    assert mine.usage.prompt_cache_hit_tokens == len(ids)
    assert mine.text == theirs["text"]


def test_a_corrupt_snapshot_is_ignored_and_the_answer_is_unchanged(
        engine: BundledEngine) -> None:
    ids = prompt(300)
    _, first = stream_sync(engine, req(ids, max_tokens=6))
    assert engine.cache is not None
    for f in engine.cache.files.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.warns(SnapshotIgnored):
        _, again = stream_sync(engine, req(ids, max_tokens=6))
    assert again.usage.prompt_cache_hit_tokens == 0 and again.text == first.text


def test_a_snapshot_of_another_model_is_never_restored(tmp_path: Path) -> None:
    ids = prompt(300)
    a = BundledEngine.random("micro", seed=0, cache_dir=tmp_path / "a")
    b = BundledEngine.random("micro", seed=1, cache_dir=tmp_path / "b")
    stream_sync(a, req(ids, max_tokens=4))
    stream_sync(b, req(ids, max_tokens=4))
    assert a.cache is not None and b.cache is not None
    # Plant model a's files under model b's digests.
    for n in (256, 300):
        shutil.copy(a.cache.files / f"{a.cache.digest(ids[:n])}.safetensors",
                    b.cache.files / f"{b.cache.digest(ids[:n])}.safetensors")
    with pytest.warns(SnapshotIgnored, match="checksum mismatch"):
        _, fin = stream_sync(b, req(ids, max_tokens=4))
    assert fin.usage.prompt_cache_hit_tokens == 0


def test_a_snapshot_that_does_not_fit_the_model_is_ignored(engine: BundledEngine) -> None:
    ids = prompt(300)
    assert engine.cache is not None
    bogus = {"pos": torch.tensor([300]), "layers.0.window": torch.zeros(3, 3)}
    engine.cache.store(ids, bogus, torch.zeros(engine.cfg.vocab_size))
    with pytest.warns(SnapshotIgnored, match="does not fit"):
        _, fin = stream_sync(engine, req(ids, max_tokens=2))
    assert fin.usage.prompt_cache_hit_tokens == 0


def test_the_cache_budget_holds_across_requests(tmp_path: Path) -> None:
    eng = BundledEngine.random("micro", seed=0, cache_dir=tmp_path, cache_bytes=400_000)
    for salt in range(4):
        stream_sync(eng, req(prompt(300, salt=salt), max_tokens=2))
    assert eng.cache is not None
    stats = eng.cache.stats()
    assert 0 < stats.snapshots and stats.nbytes <= 400_000


def test_concurrent_requests_give_the_same_answers_as_one_at_a_time(
        engine: BundledEngine) -> None:
    a, b = prompt(80, salt=1), prompt(90, salt=2)
    alone = [stream_sync(engine, req(p, max_tokens=8))[1].text for p in (a, b)]
    engine.cache = None  # a second pass from scratch, side by side
    results: dict[int, str] = {}

    async def one(i: int, p: list[int]) -> None:
        results[i] = (await engine.generate(req(p, max_tokens=8))).text

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0, a)
            tg.start_soon(one, 1, b)

    anyio.run(both)
    assert [results[0], results[1]] == alone


def test_a_rendered_prompt_or_messages_work_like_ids(engine: BundledEngine) -> None:
    messages = [{"role": "user", "content": "hello"}]
    _, by_messages = stream_sync(engine, GenerationRequest(messages=messages, max_tokens=3))
    from whalebone.dsml.encoder import encode_messages

    text = encode_messages(messages, "thinking")
    _, by_text = stream_sync(engine, GenerationRequest(prompt=text, max_tokens=3))
    assert by_text.usage.prompt_tokens == by_messages.usage.prompt_tokens == len(
        load_tokenizer().encode(text))
    assert by_text.text == by_messages.text
    assert by_text.engine == "bundled" and by_text.model == "whalebone-local"


@pytest.mark.parametrize("request_, why", [
    (GenerationRequest(), "needs a prompt"),
    (GenerationRequest(prompt=""), "empty"),
    (GenerationRequest(prompt_ids=[0, 129_280]), "outside"),
    (GenerationRequest(prompt_ids=[0, 5], max_tokens=2_000_000), "context window"),
])
def test_bad_requests_are_clear_errors(engine: BundledEngine, request_: GenerationRequest,
                                       why: str) -> None:
    with pytest.raises(EngineRequestError, match=why):
        anyio.run(engine.generate, request_)


def test_default_without_an_installed_checkpoint_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundled_mod, "CHECKPOINT_DIR", tmp_path / "none")
    with pytest.raises(EngineError, match="no bundled checkpoint is installed"):
        BundledEngine.default(cache_dir=tmp_path)


def test_the_default_cache_lives_under_whalebone_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / "home"))
    eng = BundledEngine.random("micro", seed=0)
    assert eng.cache is not None and eng.cache.root == tmp_path / "home" / "cache"


def test_prefill_chunks_sit_on_absolute_multiples_and_the_snapshot_boundary() -> None:
    assert chunks(0, 600, 256, 512) == [(0, 256), (256, 512), (512, 600)]
    assert chunks(300, 700, 256, 512) == [(300, 512), (512, 700)]
    assert chunks(100, 120, 256, 0) == [(100, 120)]
    assert len(chunks(0, 1_000_000, 1024)) == 977


def test_a_saved_checkpoint_loads_into_the_same_engine(tmp_path: Path) -> None:
    from whalebone.engine.v4.weights import save_checkpoint

    made = BundledEngine.random("micro", seed=3, use_cache=False)
    folder = tmp_path / "ckpt"
    save_checkpoint(made.transformer, folder)
    with pytest.raises(EngineError, match=r"no vocab\.json"):
        BundledEngine.from_checkpoint(folder, use_cache=False)
    made.vocab.save(folder)
    loaded = BundledEngine.from_checkpoint(folder, cache_dir=tmp_path / "cache")
    assert loaded.vocab == made.vocab
    assert loaded.transformer.fingerprint() == made.transformer.fingerprint()
    ids = prompt(60)
    assert (stream_sync(loaded, req(ids, max_tokens=6))[1].text
            == stream_sync(made, req(ids, max_tokens=6))[1].text)


def test_a_missing_or_broken_checkpoint_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no checkpoint folder"):
        BundledEngine.from_checkpoint(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EngineError, match="cannot load"):
        BundledEngine.from_checkpoint(tmp_path, use_cache=False)


def test_a_cache_that_cannot_be_written_never_fails_a_request(engine: BundledEngine) -> None:
    assert engine.cache is not None
    shutil.rmtree(engine.cache.files)
    engine.cache.files.write_text("not a folder any more")
    with pytest.warns(PrefixCacheWarning):
        _, fin = stream_sync(engine, req(prompt(300), max_tokens=3))
    assert fin.usage.completion_tokens == 3 and engine.last_stats.snapshots == []
