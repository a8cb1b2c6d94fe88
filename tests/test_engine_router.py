"""Router: tiers by policy, failover on errors and timeouts, sticky sessions."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from serving import dead_port, serving

from whalebone.dsml import tokens as T
from whalebone.engine.base import (
    EngineRequestError,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    TextDelta,
)
from whalebone.engine.clients import RawCompletionEngine, RetryPolicy
from whalebone.engine.clients.router import Router
from whalebone.engine.scripted import ScriptedEngine

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, deadline=5)


class Switchable(ScriptedEngine):
    """A scripted engine that can be made to fail like an unreachable one."""

    def __init__(self, name: str, answer: str = "ok", **kw: Any) -> None:
        self.down: Exception | None = None

        def script(_: GenerationRequest) -> str:
            if self.down is not None:
                raise self.down
            return f"{answer} from {name}{T.EOS}"

        super().__init__(script, name=name, **kw)


def call(router: Router, **kw: Any) -> tuple[str, Finished]:
    async def go() -> tuple[str, Finished]:
        parts, fin = [], None
        async for ev in router.stream(GenerationRequest(prompt="p", **kw)):
            if isinstance(ev, TextDelta):
                parts.append(ev.text)
            else:
                fin = ev
        assert fin is not None
        return "".join(parts), fin

    return anyio.run(go)


def test_failover_moves_from_a_dead_port_to_a_live_server() -> None:
    live_engine = ScriptedEngine(lambda _: "served" + T.EOS)
    with serving(live_engine) as (base, _):
        dead = RawCompletionEngine(dead_port(), flavour="whalebone", model="m", retry=FAST,
                                   name="dead")
        live = RawCompletionEngine(base, flavour="whalebone", model="m", retry=FAST,
                                   name="live")
        router = Router({"bulk": [dead, live]})
        text, fin = call(router)
        anyio.run(router.aclose)
    assert text == "served" and fin.engine == "live"
    assert any(n.startswith("failover: dead failed") for n in fin.notes)
    assert len(live_engine.requests) == 1


def test_every_engine_failing_is_reported_with_each_reason() -> None:
    a, b = Switchable("a"), Switchable("b")
    a.down = EngineUnavailable("a is down")
    b.down = EngineUnavailable("b is down")
    with pytest.raises(EngineUnavailable, match="a is down; b: b is down"):
        call(Router({"bulk": [a, b]}))


def test_a_rejected_request_does_not_fail_over() -> None:
    a, b = Switchable("a"), Switchable("b")
    a.down = EngineRequestError("prompt too long")
    with pytest.raises(EngineRequestError, match="prompt too long"):
        call(Router({"bulk": [a, b]}))
    assert b.requests == []


def test_tiers_are_chosen_by_request_then_policy_then_default() -> None:
    flash, pro, premium = Switchable("flash"), Switchable("pro"), Switchable("premium")
    router = Router({"bulk": [flash], "standard": [pro], "premium": [premium]},
                    default_tier="standard",
                    policy=lambda r: "bulk" if r.max_tokens < 100 else None)
    assert call(router, max_tokens=500)[1].engine == "pro"
    assert call(router, max_tokens=50)[1].engine == "flash"
    assert call(router, max_tokens=50, tier="premium")[1].engine == "premium"
    with pytest.raises(EngineRequestError, match="no tier 'gold'"):
        call(router, tier="gold")


def test_a_session_sticks_to_its_engine_and_a_forced_move_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = Switchable("a"), Switchable("b")
    router = Router({"bulk": [a, b]})
    assert call(router, session_id="s1")[1].engine == "a"
    # Another session's history must not move s1: b serves s2 only because a is down then.
    a.down = EngineUnavailable("a restarts")
    _, moved = call(router, session_id="s1")
    assert moved.engine == "b"
    assert any("session s1 moved from a to b: the cache starts cold" in n for n in moved.notes)
    assert "the cache starts cold" in caplog.text
    a.down = None
    # a is back, but s1's cache now lives on b: it stays there, with no switch note.
    _, stayed = call(router, session_id="s1")
    assert stayed.engine == "b" and not any("moved" in n for n in stayed.notes)
    # A new session starts on the tier's first engine.
    assert call(router, session_id="s2")[1].engine == "a"
    assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)


def test_no_first_output_within_the_timeout_fails_over() -> None:
    slow = Switchable("slow", delay=1.0)
    quick = Switchable("quick")
    router = Router({"bulk": [slow, quick]}, first_delta_timeout=0.1)
    text, fin = call(router)
    assert fin.engine == "quick" and text == "ok from quick"
    assert any("no output within 0.1s" in n for n in fin.notes)


def test_failure_after_output_began_is_not_hidden_by_failover() -> None:
    class DiesMidway(ScriptedEngine):
        async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
            yield TextDelta(text="partial")
            raise EngineUnavailable("connection reset mid-stream")

    backup = Switchable("backup")
    router = Router({"bulk": [DiesMidway([]), backup]})
    with pytest.raises(EngineUnavailable, match="mid-stream"):
        call(router)
    assert backup.requests == []


def test_router_needs_engines_and_speaks_prompts_only_if_all_do() -> None:
    with pytest.raises(EngineRequestError):
        Router({"bulk": []})
    with pytest.raises(EngineRequestError, match="default tier"):
        Router({"bulk": [Switchable("a")]}, default_tier="nope")
    chat_only = Switchable("chat")
    chat_only.accepts_prompt = False
    assert Router({"bulk": [Switchable("a")], "premium": [chat_only]}).accepts_prompt is False
