"""A router over engines: tiers picked per call, failover, and sessions that stay with their
cache.

Tiers are ordered lists of engines, e.g. ``bulk`` = [V4-Flash on DeepSeek, V4-Flash on our
vLLM], ``standard`` = [V4-Pro], ``premium`` = [any OpenAI-compatible model]. A call's tier is
``request.tier`` when set, else what the policy says, else the default tier. Within a tier the
engines are tried in order; one that is unavailable (connection refused, timeout, 429/5xx, or no
first output within ``first_delta_timeout``) hands the call to the next. A request the engine
rejected (a bad request, bad credentials) fails at once: the next engine would reject it too.

Stickiness: a session (``request.session_id``) goes back to the engine that served it last,
because that engine holds its prefix cache; any other engine would prefill the whole
conversation again. It moves only when that engine fails, and the move is reported in
``Finished.notes`` and logged as a warning, since it costs the whole cache.

Failover happens only before the first text delta reaches the caller; after that the text is
the caller's and a second engine would write a different answer, so the error goes up.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing

import anyio

from whalebone.engine.base import (
    Engine,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    StreamEvent,
)

log = logging.getLogger(__name__)

Policy = Callable[[GenerationRequest], str | None]


class Router(Engine):
    """An engine made of engines."""

    name = "router"

    def __init__(self, tiers: Mapping[str, Sequence[Engine]], *, default_tier: str | None = None,
                 policy: Policy | None = None, first_delta_timeout: float | None = None,
                 max_sessions: int = 100_000) -> None:
        if not tiers or any(not engines for engines in tiers.values()):
            raise EngineRequestError("a router needs at least one tier, each with an engine")
        self.tiers = {tier: list(engines) for tier, engines in tiers.items()}
        self.default_tier = default_tier or next(iter(self.tiers))
        if self.default_tier not in self.tiers:
            raise EngineRequestError(f"default tier {self.default_tier!r} is not among the "
                                     f"tiers {sorted(self.tiers)}")
        self.policy = policy
        self.first_delta_timeout = first_delta_timeout
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, Engine] = OrderedDict()  # session -> engine with cache
        first = self.tiers[self.default_tier][0]
        self.model = first.model
        engines = self.engines()
        self.context_window = min(e.context_window for e in engines)
        # A chat-only engine anywhere means callers must send messages as well as the prompt.
        self.accepts_prompt = all(e.accepts_prompt for e in engines)

    def engines(self) -> list[Engine]:
        seen: dict[int, Engine] = {}
        for engines in self.tiers.values():
            for e in engines:
                seen.setdefault(id(e), e)
        return list(seen.values())

    def tier_of(self, request: GenerationRequest) -> str:
        tier = request.tier or (self.policy(request) if self.policy else None) \
            or self.default_tier
        if tier not in self.tiers:
            raise EngineRequestError(f"no tier {tier!r}; this router has {sorted(self.tiers)}")
        return tier

    def candidates(self, request: GenerationRequest) -> list[Engine]:
        """The engines to try, in order: the session's own engine first when it is in the
        call's tier."""
        engines = self.tiers[self.tier_of(request)]
        sticky = self.sessions.get(request.session_id) if request.session_id else None
        if sticky is not None and sticky in engines:
            return [sticky, *[e for e in engines if e is not sticky]]
        return list(engines)

    def _remember(self, session_id: str | None, engine: Engine) -> None:
        if not session_id:
            return
        self.sessions[session_id] = engine
        self.sessions.move_to_end(session_id)
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)

    async def _first(self, stream: AsyncIterator[StreamEvent]) -> StreamEvent:
        if self.first_delta_timeout is None:
            return await stream.__anext__()
        try:
            with anyio.fail_after(self.first_delta_timeout):
                return await stream.__anext__()
        except TimeoutError:
            raise EngineUnavailable(f"no output within {self.first_delta_timeout:g}s") from None

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        engines = self.candidates(request)
        previous = self.sessions.get(request.session_id) if request.session_id else None
        notes: list[str] = []
        failures: list[str] = []
        for engine in engines:
            started = False
            try:
                async with aclosing(engine.stream(request)) as stream:  # type: ignore[type-var]
                    first = await self._first(stream)
                    started = True
                    # From here on the caller has output from this engine: no more failover.
                    notes += self._switch_notes(request.session_id, previous, engine)
                    self._remember(request.session_id, engine)
                    event = first
                    while True:
                        if isinstance(event, Finished):
                            yield event.model_copy(update={"notes": [*notes, *event.notes]})
                            return
                        yield event
                        event = await stream.__anext__()
            except StopAsyncIteration:
                raise EngineError(f"engine {engine.name} ended its stream without a "
                                  "result") from None
            except EngineError as e:
                if started or not e.retryable:
                    raise
                failures.append(f"{engine.name}: {e}")
                notes.append(f"failover: {engine.name} failed ({e})")
                log.warning("router: %s failed, trying the next engine: %s", engine.name, e)
                continue
        raise EngineUnavailable("every engine of the tier failed: " + "; ".join(failures))

    def _switch_notes(self, session_id: str | None, previous: Engine | None,
                      engine: Engine) -> list[str]:
        if session_id is None or previous is None or previous is engine:
            return []
        message = (f"session {session_id} moved from {previous.name} to {engine.name}: "
                   "the cache starts cold")
        log.warning("router: %s", message)
        return [message]

    def count_tokens(self, text: str) -> int:
        return self.tiers[self.default_tier][0].count_tokens(text)

    async def aclose(self) -> None:
        for engine in self.engines():
            await engine.aclose()
